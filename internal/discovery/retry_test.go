package discovery_test

import (
	"context"
	"log/slog"
	"net"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	_ "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/discovery"
)

// TestSubscriptionRetried: a routing change while the broker is away
// makes the watcher's subscription to the new service fail (on NATS, after
// 5 s without the server). Once the broker is back, the watcher subscribes
// again and hears the service's heartbeats. Before, it never retried: the
// service's instances were heard at most once, in answer to the ping sent
// on reconnection, and then expired for good.
//
// It runs a nats-server of its own: stopping the shared one would break
// the other tests.
func TestSubscriptionRetried(t *testing.T) {
	srv := startOwnNATS(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	failed := &matchHandler{prefix: "discovery subscription failed"}
	wb, err := broker.Open(ctx, srv.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wb.Close() })
	const interval = 200 * time.Millisecond
	reg := discovery.NewRegistryWith(discovery.Options{Interval: interval})
	reg.Route([]string{"users"})
	w, err := discovery.WatchWith(ctx, wb, reg, discovery.WatchOptions{Logger: slog.New(failed), Settle: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	srv.stop()
	poll(t, 10*time.Second, "the watcher's connection lost", func() bool { return !broker.Connected(wb) })
	reg.Route([]string{"users", "orders"}) // a reload during the outage
	poll(t, 20*time.Second, "the subscription to orders failed", func() bool { return failed.n.Load() > 0 })
	srv.start()
	poll(t, 15*time.Second, "the watcher's connection back", func() bool { return broker.Connected(wb) })

	ab, err := broker.Open(ctx, srv.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ab.Close() })
	an := discovery.NewAnnouncer(ab, discovery.Self{Service: "orders", Instance: "o-1", Sidecar: "sc-o"}, interval, nil, nil)
	if err := an.Start(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { an.Stop(context.Background()) })
	// Heard on the service's subject, heartbeat after heartbeat: an answer
	// to a ping alone is heard once.
	var first time.Time
	poll(t, 15*time.Second, "the heartbeats of orders heard for 5 intervals", func() bool {
		h := reg.Instances("orders") // Healthy's snapshot keeps the LastSeen of the last change
		if len(h) != 1 || !h[0].Healthy {
			return false
		}
		if first.IsZero() {
			first = h[0].LastSeen
		}
		return h[0].LastSeen.Sub(first) >= 5*interval
	})
}

// ownNATS is a nats-server process on a free port of its own.
type ownNATS struct {
	t    *testing.T
	port string
	cmd  *exec.Cmd
	done chan struct{}
}

func startOwnNATS(t *testing.T) *ownNATS {
	t.Helper()
	if _, err := exec.LookPath("nats-server"); err != nil {
		t.Fatal("nats-server not found: install it (Debian: apt-get install nats-server)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	n := &ownNATS{t: t, port: port}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *ownNATS) url() string { return "nats://127.0.0.1:" + n.port }

// start starts the server, on the same port every time, and waits until
// it accepts connections.
func (n *ownNATS) start() {
	n.t.Helper()
	cmd := exec.Command("nats-server", "-a", "127.0.0.1", "-p", n.port)
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	poll(n.t, 10*time.Second, "nats-server on port "+n.port, func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+n.port)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop kills the server, if it runs, and waits for it to exit.
func (n *ownNATS) stop() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// poll waits up to d for cond, failing the test with what was awaited.
func poll(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
	}
}

// matchHandler counts the log records whose message starts with prefix.
type matchHandler struct {
	prefix string
	n      atomic.Int64
}

func (h *matchHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *matchHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.n.Add(1)
	}
	return nil
}
func (h *matchHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *matchHandler) WithGroup(string) slog.Handler      { return h }
