package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// rabbitmqctl runs rabbitmqctl, failing the test if it fails.
func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestVhostUser: a user of its own, allowed on a vhost of its own (made
// here with rabbitmqctl, removed after; guest and / are left alone),
// carries messages there; it cannot open another vhost, and what it
// publishes does not reach a subscriber of the same subject on /.
func TestVhostUser(t *testing.T) {
	addr := testAddr(t)
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("rabbitmqctl not found: the test creates its vhost and user with it")
		}
		t.Skip("rabbitmqctl not found: the test creates its vhost and user with it")
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	vhost, user, pass := "busmesh-test-"+hex.EncodeToString(suffix), "busmesh-test-"+hex.EncodeToString(suffix), "pw-"+hex.EncodeToString(suffix)
	rabbitmqctl(t, "add_vhost", vhost)
	t.Cleanup(func() { rabbitmqctl(t, "delete_vhost", vhost) })
	rabbitmqctl(t, "add_user", user, pass)
	t.Cleanup(func() { rabbitmqctl(t, "delete_user", user) })
	rabbitmqctl(t, "set_permissions", "-p", vhost, user, ".*", ".*", ".*")

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	own := dial(t, "amqp://"+user+":"+pass+"@"+addr+"/"+vhost)
	defer own.Close()
	guest := dial(t, "amqp://guest:guest@"+addr+"/")
	defer guest.Close()
	subject := "busmesh.vhost-test." + hex.EncodeToString(suffix)
	got := make(chan string, 1)
	if _, err := own.Subscribe(ctx, subject, func(_ context.Context, d []byte) { got <- string(d) }); err != nil {
		t.Fatal(err)
	}
	leaked := make(chan string, 1)
	if _, err := guest.Subscribe(ctx, subject, func(_ context.Context, d []byte) { leaked <- string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := own.Publish(ctx, subject, []byte("in the vhost")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "in the vhost" {
			t.Fatalf("got %q", m)
		}
	case <-ctx.Done():
		t.Fatal("no message within the vhost")
	}
	select {
	case m := <-leaked:
		t.Errorf("a subscriber on / got %q, published on %s", m, vhost)
	case <-time.After(300 * time.Millisecond):
	}
	octx, ocancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer ocancel()
	if b, err := broker.Open(octx, "amqp://"+user+":"+pass+"@"+addr+"/", nil); err == nil {
		b.Close()
		t.Error("the vhost's user opened / too")
	}
}
