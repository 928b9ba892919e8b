package nats_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/testutil"
)

// serverTLS returns a server TLS config for 127.0.0.1, its certificate
// from a CA of the test's own, and the path of the CA's certificate as a
// PEM file (what a client's tls_ca names).
func serverTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	ca := testutil.NewCA(t, "nats-test")
	return &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1")}, MinVersion: tls.VersionTLS12}, ca.File
}

// startSecureServer starts an in-process NATS server on a free loopback
// port with TLS, a user with a password and an NKey user.
func startSecureServer(t *testing.T, tlsConfig *tls.Config, nkeyPub string) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		TLS: true, TLSConfig: tlsConfig, TLSTimeout: 5,
		Users: []*server.User{{Username: "mesh", Password: "s3cret"}},
		Nkeys: []*server.NkeyUser{{Nkey: nkeyPub}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s.Addr().String()
}

func roundTrip(t *testing.T, b broker.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan string, 1)
	if _, err := b.Subscribe(ctx, "secure.test", func(_ context.Context, d []byte) { got <- string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "secure.test", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "hi" {
			t.Fatalf("got %q", m)
		}
	case <-ctx.Done():
		t.Fatal("no message over the secured connection")
	}
}

// TestTLSAndCredentials: a TLS server with a private CA takes a client
// that trusts the CA (tls_ca) and authenticates with a user and password
// or an NKey seed (nkey); without the CA, with a wrong password or with
// no credentials the connection fails.
func TestTLSAndCredentials(t *testing.T) {
	tlsConfig, caFile := serverTLS(t)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startSecureServer(t, tlsConfig, pub)
	open := func(url string) (broker.Broker, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		return broker.Open(ctx, url, nil)
	}
	for _, good := range []string{
		fmt.Sprintf("tls://mesh:s3cret@%s?tls_ca=%s", addr, caFile),
		fmt.Sprintf("tls://%s?tls_ca=%s&nkey=%s", addr, caFile, seedFile),
	} {
		b, err := open(good)
		if err != nil {
			t.Fatalf("Open(%s) = %v", broker.Redact(good), err)
		}
		roundTrip(t, b)
		b.Close()
	}
	for _, bad := range []struct{ url, why string }{
		{fmt.Sprintf("tls://mesh:s3cret@%s", addr), "certificate"},
		{fmt.Sprintf("tls://mesh:wrong@%s?tls_ca=%s", addr, caFile), "authorization"},
		{fmt.Sprintf("tls://%s?tls_ca=%s", addr, caFile), "authorization"},
		{fmt.Sprintf("nats://mesh:s3cret@%s?tls_ca=%s&nkye=x", addr, caFile), "unknown"},
	} {
		b, err := open(bad.url)
		if err == nil {
			b.Close()
			t.Errorf("Open(%s) succeeded, want a failure (%s)", broker.Redact(bad.url), bad.why)
			continue
		}
		if !strings.Contains(strings.ToLower(err.Error()), bad.why) {
			t.Errorf("Open(%s) = %v, want an error about %s", broker.Redact(bad.url), err, bad.why)
		}
	}
}
