package kafka_test

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/testutil"
)

func TestSASL(t *testing.T) {
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			c := startCluster(t, kfake.EnableSASL(), kfake.Superuser(strings.ToUpper(mech), "mesh", "s3cret"))
			url := strings.Replace(c.url, "kafka://", "kafka://mesh:s3cret@", 1) + "?sasl=" + mech
			b := dial(t, url)
			defer b.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got := make(chan string, 2)
			if _, err := b.Subscribe(ctx, "sasl.test", func(_ context.Context, d []byte) { got <- "fan:" + string(d) }); err != nil {
				t.Fatal(err)
			}
			// Each subscription has a kgo client of its own, which
			// authenticates too.
			if _, err := b.QueueSubscribe(ctx, "sasl.test", "g", func(_ context.Context, d []byte) { got <- "queue:" + string(d) }); err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, "sasl.test", []byte("hi")); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for len(seen) < 2 {
				select {
				case m := <-got:
					seen[m] = true
				case <-ctx.Done():
					t.Fatalf("got %v, want fan:hi and queue:hi", seen)
				}
			}

			bad := strings.Replace(url, "s3cret", "wrong-pw", 1)
			octx, ocancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer ocancel()
			if b, err := broker.Open(octx, bad, nil); err == nil {
				b.Close()
				t.Fatal("Open with a wrong password succeeded")
			} else if strings.Contains(err.Error(), "wrong-pw") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	tlsConfig, caFile := serverTLS(t)
	c := startCluster(t, kfake.TLS(tlsConfig))
	url := strings.Replace(c.url, "kafka://", "kafkas://", 1) + "?tls_ca=" + caFile
	b := dial(t, url)
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan string, 2)
	if _, err := b.Subscribe(ctx, "tls.test", func(_ context.Context, d []byte) { got <- "fan:" + string(d) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.QueueSubscribe(ctx, "tls.test", "g", func(_ context.Context, d []byte) { got <- "queue:" + string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "tls.test", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case m := <-got:
			seen[m] = true
		case <-ctx.Done():
			t.Fatalf("got %v, want fan:hi and queue:hi", seen)
		}
	}
	// Without the CA the broker's certificate is not trusted.
	octx, ocancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer ocancel()
	if b, err := broker.Open(octx, strings.Replace(c.url, "kafka://", "kafkas://", 1), nil); err == nil {
		b.Close()
		t.Fatal("Open without the CA succeeded")
	}
}

// serverTLS returns a server TLS config for 127.0.0.1, its certificate
// from a CA of the test's own, and the path of the CA's certificate as a
// PEM file (what a client's tls_ca names).
func serverTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	ca := testutil.NewCA(t, "kafka-test")
	return &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1")}, MinVersion: tls.VersionTLS12}, ca.File
}
