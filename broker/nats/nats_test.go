package nats_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	bnats "github.com/busmesh/busmesh/broker/nats"
)

func TestConformance(t *testing.T) {
	t.Run("nats-embedded", func(t *testing.T) {
		t.Parallel()
		srv := &restartable{}
		srv.start(t, "127.0.0.1:0")
		t.Cleanup(srv.shutdown)
		brokertest.Run(t, brokertest.Features{
			Ordered: true,
			Returns: true,
			Restart: srv.restart,
		}, func(t *testing.T) broker.Broker { return dial(t, srv.url()) })
	})
	t.Run("nats-server", func(t *testing.T) {
		t.Parallel()
		addr := os.Getenv("BUSMESH_TEST_NATS")
		if addr == "" {
			addr = "127.0.0.1:4222"
		}
		brokertest.Require(t, "nats-server", addr,
			"start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js")
		brokertest.Run(t, brokertest.Features{Ordered: true, Returns: true},
			func(t *testing.T) broker.Broker { return dial(t, "nats://"+addr) })
	})
}

func dial(t *testing.T, url string) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := bnats.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("Dial(%s) = %v", url, err)
	}
	return c
}

// restartable is an embedded server that can be stopped and started again
// on the same port, to drop every client connection.
type restartable struct {
	mu   sync.Mutex
	addr string
	srv  *bnats.Server
}

func (r *restartable) start(t *testing.T, addr string) {
	t.Helper()
	srv, err := bnats.StartServer(addr)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.srv = srv
	r.addr = strings.TrimPrefix(srv.URL(), "nats://")
}

func (r *restartable) url() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return "nats://" + r.addr
}

func (r *restartable) shutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.srv.Shutdown()
}

func (r *restartable) restart(t *testing.T) {
	r.shutdown()
	time.Sleep(200 * time.Millisecond)
	r.start(t, r.addr)
}

func TestOpenEmbedded(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, "embedded", nil)
	if err != nil {
		t.Fatalf("Open(embedded) = %v", err)
	}
	defer b.Close()
	url := b.(*bnats.Conn).EmbeddedURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("EmbeddedURL() = %q, want nats://127.0.0.1:<port>", url)
	}
	if got := broker.MaxMessageBytes(b); got != bnats.EmbeddedMaxPayload {
		t.Errorf("MaxMessageBytes() = %d, want %d", got, bnats.EmbeddedMaxPayload)
	}
	// Another process would join over TCP.
	other := dial(t, url)
	defer other.Close()
	got := make(chan []byte, 1)
	if _, err := other.Subscribe(ctx, "x.y", func(_ context.Context, d []byte) { got <- d }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "x.y", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if string(d) != "hi" {
			t.Fatalf("got %q, want hi", d)
		}
	case <-ctx.Done():
		t.Fatal("message from embedded connection did not reach the TCP client")
	}
}

func TestDialUnreachable(t *testing.T) {
	// A port nobody listens on: take a free one and release it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err = broker.Open(ctx, "nats://user:secret@"+addr, nil)
	var ce *broker.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("Open(unreachable) = %v, want *broker.ConnectError", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error %q shows the password", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address %s", err, addr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v, want under 5s", d)
	}
}
