package identity_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/testutil"
)

// eventually polls cond until it holds or 10 s pass (the machine is busy).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runSource starts s.Run and stops it when the test ends.
func runSource(t *testing.T, s *identity.Source) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestSourceRotation(t *testing.T) {
	m := newTestMesh(t, "prod")
	web := m.identity(t, "web")
	dir := t.TempDir()
	certFile, keyFile := m.issue(t, dir, "orders", time.Hour, time.Now())
	var logs testutil.Buffer
	src, err := identity.NewSource(identity.SourceConfig{
		CertFile: certFile, KeyFile: keyFile, CAFile: m.caFile(),
		Interval: 20 * time.Millisecond, Grace: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, src)
	old := src.Current()

	// web keeps sending to the certificate it learned first while orders
	// rotates: every envelope must verify, before, during and after.
	oldPeer := peer(t, web, old)
	send, err := web.SendKey(oldPeer)
	if err != nil {
		t.Fatal(err)
	}
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		env := testEnvelope(200)
		for {
			select {
			case <-stop:
				return
			default:
			}
			b := identity.AppendMAC(append([]byte(nil), env...), env, send)
			msg, mac, _ := identity.SplitMAC(b)
			sent.Add(1)
			local, err := src.Local(send.Receiver())
			if err == nil {
				var key *identity.PairKey
				if key, err = local.RecvKey(peer(t, local, web)); err == nil {
					err = identity.VerifyMAC(msg, mac, key)
				}
			}
			if err != nil {
				failed.Add(1)
				t.Errorf("envelope %d to the old identity: %v", sent.Load(), err)
			}
		}
	})

	m.issue(t, dir, "orders", time.Hour, time.Now())
	eventually(t, "the new identity", func() bool { return src.Current().KeyID() != old.KeyID() })
	atRotation := sent.Load()
	eventually(t, "envelopes after the rotation", func() bool { return sent.Load() > atRotation+100 })
	close(stop)
	wg.Wait()

	cur := src.Current()
	if cur.Service() != "orders" {
		t.Errorf("Current().Service() = %q, want orders", cur.Service())
	}
	for _, id := range []*identity.Identity{old, cur} {
		got, err := src.Local(id.KeyID())
		if err != nil || got != id {
			t.Errorf("Local(%s) = %v, %v; want that identity", id.KeyID(), got, err)
		}
	}
	if failed.Load() != 0 {
		t.Errorf("%d of %d envelopes failed during the rotation", failed.Load(), sent.Load())
	}
	if !strings.Contains(logs.String(), "identity rotated") {
		t.Errorf("no rotation logged: %s", logs.String())
	}
}

func TestSourceGraceEnds(t *testing.T) {
	m := newTestMesh(t, "prod")
	dir := t.TempDir()
	certFile, keyFile := m.issue(t, dir, "orders", time.Hour, time.Now())
	src, err := identity.NewSource(identity.SourceConfig{CertFile: certFile, KeyFile: keyFile, CAFile: m.caFile(), Grace: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	old := src.Current()
	m.issue(t, dir, "orders", time.Hour, time.Now())
	if err := src.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := src.Local(old.KeyID()); !errors.Is(err, identity.ErrUnknownKey) {
		t.Errorf("Local(old) after the grace = %v, want ErrUnknownKey", err)
	}
	if _, err := src.Local(src.Current().KeyID()); err != nil {
		t.Errorf("Local(current) = %v", err)
	}
}

func TestSourceKeepsIdentityOnBadFiles(t *testing.T) {
	m := newTestMesh(t, "prod")
	other := newTestMesh(t, "prod")
	dir := t.TempDir()
	certFile, keyFile := m.issue(t, dir, "orders", time.Hour, time.Now())
	var logs testutil.Buffer
	src, err := identity.NewSource(identity.SourceConfig{
		CertFile: certFile, KeyFile: keyFile, CAFile: m.caFile(), Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, src)
	good := src.Current()

	bad := []struct {
		name  string
		write func()
		want  string // in the log
	}{
		{"garbage certificate", func() { os.WriteFile(certFile, []byte("garbage"), 0o644) }, "malformed"},
		{"certificate of another CA", func() { other.issue(t, dir, "orders", time.Hour, time.Now()) }, "not signed by the mesh CA"},
		{"key of another certificate", func() {
			certPEM, _, err := m.ca.Issue("orders", time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			_, keyPEM, err := m.ca.Issue("orders", time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			identity.WriteServiceFiles(dir, "orders", certPEM, keyPEM)
		}, "not the certificate's"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			tt.write()
			eventually(t, "the failed reload logged", func() bool { return strings.Contains(logs.String(), tt.want) })
			if src.Current() != good {
				t.Fatalf("Current() changed after %s", tt.name)
			}
		})
	}
	m.issue(t, dir, "orders", time.Hour, time.Now())
	eventually(t, "a good file loaded after bad ones", func() bool { return src.Current() != good })
}

func TestSourceWarnsBeforeExpiry(t *testing.T) {
	m := newTestMesh(t, "prod")
	dir := t.TempDir()
	// 10 minutes left of 61: in the last fifth.
	certFile, keyFile := m.issue(t, dir, "orders", time.Hour, time.Now().Add(-50*time.Minute))
	var logs testutil.Buffer
	src, err := identity.NewSource(identity.SourceConfig{
		CertFile: certFile, KeyFile: keyFile, CAFile: m.caFile(), Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	runSource(t, src)
	eventually(t, "the expiry warning", func() bool { return strings.Contains(logs.String(), "expiring") })
	time.Sleep(100 * time.Millisecond) // several more polls
	if n := strings.Count(logs.String(), "expiring"); n != 1 {
		t.Errorf("warned %d times, want once:\n%s", n, logs.String())
	}

	// A fresh certificate is not warned about.
	m.issue(t, dir, "orders", time.Hour, time.Now())
	eventually(t, "the rotation", func() bool { return strings.Contains(logs.String(), "identity rotated") })
	time.Sleep(100 * time.Millisecond)
	if n := strings.Count(logs.String(), "expiring"); n != 1 {
		t.Errorf("after rotating to a fresh certificate, %d warnings, want still 1", n)
	}
}
