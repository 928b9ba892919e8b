package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	"github.com/busmesh/busmesh/broker/rabbitmq"
)

const startCmd = "rabbitmq-server -detached"

// testAddr is the RabbitMQ the tests use: BUSMESH_TEST_RABBITMQ, or the
// local default. Its guest/guest user is the one RabbitMQ creates.
func testAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("BUSMESH_TEST_RABBITMQ")
	if addr == "" {
		addr = "127.0.0.1:5672"
	}
	brokertest.Require(t, "rabbitmq", addr, startCmd)
	return addr
}

func TestConformance(t *testing.T) {
	addr := testAddr(t)
	t.Run("rabbitmq", func(t *testing.T) {
		// Through a proxy, so that Restart drops only this run's
		// connections: other packages' tests share the server.
		proxy := brokertest.NewProxy(t, addr)
		url := "amqp://guest:guest@" + proxy.Addr() + "/"
		brokertest.Run(t, brokertest.Features{
			Ordered: true,
			Returns: true,
			Restart: func(*testing.T) { proxy.Cut() },
		}, func(t *testing.T) broker.Broker { return dial(t, url) })
	})
}

func dial(t testing.TB, url string) *rabbitmq.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := rabbitmq.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", broker.Redact(url), err)
	}
	return c
}

func TestDialUnreachable(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: take a free one and release it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	checkOpenFails(t, 5*time.Second, "amqp://guest:s3cret-pw@"+addr+"/", addr, "refused")
}

func TestDialSilentServer(t *testing.T) {
	t.Parallel()
	// Accepts TCP and never speaks AMQP: the handshake must time out.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	addr := l.Addr().String()
	url := "amqp://guest:s3cret-pw@" + addr + "/"
	checkOpenFails(t, time.Second, url, addr, "AMQP handshake not finished")
	if !testing.Short() {
		// Without a deadline of the caller's, Dial's own 5 s applies.
		checkOpenFails(t, 0, url, addr, "AMQP handshake not finished")
	}
}

func TestDialWrongPassword(t *testing.T) {
	t.Parallel()
	addr := testAddr(t)
	checkOpenFails(t, 5*time.Second, "amqp://guest:s3cret-pw@"+addr+"/", addr, `log in as "guest"`)
}

// checkOpenFails opens url with a ctx of timeout (none if 0) and wants a
// *broker.ConnectError within it, and within 5 s, that names addr and the
// reason, and not the password.
func checkOpenFails(t *testing.T, timeout time.Duration, url, addr, reason string) {
	t.Helper()
	ctx, cancel := t.Context(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	start := time.Now()
	b, err := broker.Open(ctx, url, nil)
	if err == nil {
		b.Close()
		t.Fatalf("Open(%s) succeeded, want an error", broker.Redact(url))
	}
	t.Logf("Open took %v: %v", time.Since(start).Round(time.Millisecond), err)
	var ce *broker.ConnectError
	if !errors.As(err, &ce) {
		t.Errorf("Open = %T %v, want *broker.ConnectError", err, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "s3cret-pw") {
		t.Errorf("error %q shows the password", msg)
	}
	if !strings.Contains(msg, addr) {
		t.Errorf("error %q does not name the address %s", msg, addr)
	}
	if !strings.Contains(msg, reason) {
		t.Errorf("error %q does not give the reason (%q)", msg, reason)
	}
	limit := 5 * time.Second
	if timeout > 0 {
		limit = min(limit, timeout)
	}
	if d := time.Since(start); d > limit+500*time.Millisecond {
		t.Errorf("Open took %v, want at most %v", d, limit)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, query, want string
	}{
		{"unknown", "?prefetc=3", `unknown option "prefetc"`},
		{"prefetch", "?prefetch=0", `option prefetch="0": want a number from 1 to 65535`},
		{"confirm", "?confirm=yes", `option confirm="yes": want true or false`},
		{"max bytes", "?max_message_bytes=-1", `option max_message_bytes="-1"`},
		{"reserved exchange", "?exchange=amq.topic", `option exchange="amq.topic"`},
		{"exchange type", "?exchange_type=fanout", `option exchange_type="fanout": want direct or topic`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, err := rabbitmq.Dial(ctx, "amqp://guest:s3cret-pw@127.0.0.1:1/"+tt.query, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial(%s) = %v, want an error with %q", tt.query, err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestMaxMessageBytes(t *testing.T) {
	t.Parallel()
	addr := testAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	def := dial(t, "amqp://guest:guest@"+addr+"/")
	defer def.Close()
	if got := def.MaxMessageBytes(); got != 16<<20 && got != 128<<20 {
		t.Errorf("MaxMessageBytes() = %d, want RabbitMQ's default (16 or 128 MiB)", got)
	}

	const limit = 64 << 10
	b := dial(t, "amqp://guest:guest@"+addr+"/?max_message_bytes=65536")
	defer b.Close()
	if got := broker.MaxMessageBytes(b); got != limit {
		t.Fatalf("MaxMessageBytes() = %d, want %d", got, limit)
	}
	subj := uniqueSubject("maxbytes")
	got := make(chan int, 4)
	if _, err := b.Subscribe(ctx, subj, func(_ context.Context, d []byte) { got <- len(d) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, subj, make([]byte, limit)); err != nil {
		t.Fatalf("Publish(limit) = %v", err)
	}
	if err := b.Publish(ctx, subj, make([]byte, limit+1)); !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("Publish(limit+1) = %v, want ErrTooLarge", err)
	}
	if err := b.Publish(ctx, subj, []byte("after")); err != nil {
		t.Fatalf("Publish after ErrTooLarge = %v", err)
	}
	for _, want := range []int{limit, len("after")} {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("received %d bytes, want %d", n, want)
			}
		case <-ctx.Done():
			t.Fatalf("message of %d bytes not received", want)
		}
	}
}

var subjectSeq atomic.Int64

// uniqueSubject returns a subject no other test or run uses.
func uniqueSubject(prefix string) string {
	return fmt.Sprintf("rabbitmqtest.%s.%d-%d", prefix, time.Now().UnixNano(), subjectSeq.Add(1))
}

func TestQueueSubscribeError(t *testing.T) {
	t.Parallel()
	addr := testAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	url := "amqp://guest:guest@" + addr + "/"
	subj := uniqueSubject("declerr")
	// Someone else's queue under the group queue's name, with other
	// arguments: declaring it fails with 406.
	ac, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	ch, err := ac.Channel()
	if err != nil {
		t.Fatal(err)
	}
	queue := rabbitmq.DefaultExchange + "/g/" + subj
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)

	b := dial(t, url)
	defer b.Close()
	_, err = b.QueueSubscribe(ctx, subj, "g", func(context.Context, []byte) {})
	if err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") {
		t.Fatalf("QueueSubscribe onto a queue declared otherwise = %v, want PRECONDITION_FAILED", err)
	}
	// The connection is still good.
	got := make(chan struct{}, 1)
	if _, err := b.Subscribe(ctx, subj, func(context.Context, []byte) { got <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, subj, []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("no delivery after a failed QueueSubscribe")
	}
}

func TestConfirm(t *testing.T) {
	t.Parallel()
	addr := testAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b := dial(t, "amqp://guest:guest@"+addr+"/?confirm=true")
	defer b.Close()
	subj := uniqueSubject("confirm")
	got := make(chan string, 1)
	if _, err := b.Subscribe(ctx, subj, func(_ context.Context, d []byte) { got <- string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, subj, []byte("confirmed")); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	select {
	case m := <-got:
		if m != "confirmed" {
			t.Fatalf("got %q", m)
		}
	case <-ctx.Done():
		t.Fatal("confirmed message not delivered")
	}
	// Unroutable messages are confirmed too (after their return).
	returned := make(chan uint64, 1)
	if err := b.PublishReturnable(ctx, uniqueSubject("nobody"), []byte("x"), 7, func(tok uint64) { returned <- tok }); err != nil {
		t.Fatalf("PublishReturnable = %v", err)
	}
	select {
	case tok := <-returned:
		if tok != 7 {
			t.Fatalf("returned token %d, want 7", tok)
		}
	case <-ctx.Done():
		t.Fatal("unroutable message not returned")
	}
}
