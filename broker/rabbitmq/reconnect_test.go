package rabbitmq_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/rabbitmq"
)

// gate is a TCP proxy to the broker that can be shut: while shut it hangs up
// on every new connection, so the backend stays disconnected.
type gate struct {
	target string
	ln     net.Listener
	shut   atomic.Bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{target: target, ln: ln, conns: map[net.Conn]struct{}{}}
	g.wg.Go(g.accept)
	t.Cleanup(func() {
		ln.Close()
		g.cut()
		g.wg.Wait()
	})
	return g
}

func (g *gate) url() string { return "amqp://guest:guest@" + g.ln.Addr().String() + "/" }

// cut drops every connection through the gate.
func (g *gate) cut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for c := range g.conns {
		c.Close()
	}
}

func (g *gate) accept() {
	for {
		in, err := g.ln.Accept()
		if err != nil {
			return
		}
		if g.shut.Load() {
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", g.target)
		if err != nil {
			in.Close()
			continue
		}
		g.mu.Lock()
		g.conns[in], g.conns[out] = struct{}{}, struct{}{}
		g.mu.Unlock()
		for _, p := range [][2]net.Conn{{in, out}, {out, in}} {
			g.wg.Go(func() {
				io.Copy(p[0], p[1])
				p[0].Close()
				p[1].Close()
				g.mu.Lock()
				delete(g.conns, p[0])
				delete(g.conns, p[1])
				g.mu.Unlock()
			})
		}
	}
}

// counter counts log records by message.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) Enabled(context.Context, slog.Level) bool { return true }
func (c *counter) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *counter) WithGroup(string) slog.Handler            { return c }
func (c *counter) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[r.Message]++
	return nil
}

func (c *counter) count(msg string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[msg]
}

// eventually polls cond every 20 ms until it holds, or fails t after d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDisconnected(t *testing.T) {
	addr := testAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g := newGate(t, addr)
	logs := &counter{n: map[string]int{}}
	ctxDial, cancelDial := context.WithTimeout(ctx, 5*time.Second)
	defer cancelDial()
	b, err := broker.Open(ctxDial, g.url(), slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	subj := uniqueSubject("disconnected")
	var fan, group atomic.Int64
	if _, err := b.Subscribe(ctx, subj, func(context.Context, []byte) { fan.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.QueueSubscribe(ctx, subj, "g", func(context.Context, []byte) { group.Add(1) }); err != nil {
		t.Fatal(err)
	}

	g.shut.Store(true)
	g.cut()
	eventually(t, 5*time.Second, "Publish to fail with ErrDisconnected", func() bool {
		return errors.Is(b.Publish(ctx, subj, []byte("x")), broker.ErrDisconnected)
	})
	if _, err := b.Subscribe(ctx, subj, func(context.Context, []byte) {}); !errors.Is(err, broker.ErrDisconnected) {
		t.Errorf("Subscribe while disconnected = %v, want ErrDisconnected", err)
	}
	// Let a few redials fail.
	time.Sleep(time.Second)

	g.shut.Store(false)
	eventually(t, 10*time.Second, "both subscriptions to hear again", func() bool {
		_ = b.Publish(ctx, subj, []byte("x"))
		return fan.Load() > 0 && group.Load() > 0
	})
	if n := logs.count("broker connection lost"); n != 1 {
		t.Errorf("logged the lost connection %d times, want once", n)
	}
	if n := logs.count("broker reconnected"); n != 1 {
		t.Errorf("logged the reconnection %d times, want once", n)
	}
}

func TestReconnectLeavesNoGoroutines(t *testing.T) {
	addr := testAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	g := newGate(t, addr)
	pub := dial(t, "amqp://guest:guest@"+addr+"/")
	defer pub.Close()
	before := runtime.NumGoroutine()

	b := dial(t, g.url())
	subj := uniqueSubject("leak")
	var fan, group atomic.Int64
	if _, err := b.Subscribe(ctx, subj, func(context.Context, []byte) { fan.Add(1) }); err != nil {
		t.Fatal(err)
	}
	if _, err := b.QueueSubscribe(ctx, subj, "g", func(context.Context, []byte) { group.Add(1) }); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		g.cut()
		f, q := fan.Load(), group.Load()
		eventually(t, 10*time.Second, "delivery after cut "+strconv.Itoa(i), func() bool {
			_ = pub.Publish(ctx, subj, []byte("x"))
			return fan.Load() > f && group.Load() > q
		})
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var last int
	eventually(t, 5*time.Second, "goroutines to return to the baseline", func() bool {
		last = runtime.NumGoroutine()
		return last <= before
	})
	t.Logf("%d goroutines before, %d after 5 reconnects and Close", before, last)
	if t.Failed() {
		buf := make([]byte, 1<<20)
		t.Logf("%d goroutines, %d before:\n%s", last, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestLastGroupMemberLeaves(t *testing.T) {
	t.Parallel()
	addr := testAddr(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b := dial(t, "amqp://guest:guest@"+addr+"/")
	defer b.Close()
	subj := uniqueSubject("lastmember")
	returned := make(chan uint64, 64)
	onReturn := func(tok uint64) { returned <- tok }
	sub, err := b.QueueSubscribe(ctx, subj, "g", func(context.Context, []byte) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	// The queue goes with its last consumer; from then on a publish comes
	// back instead of waiting in a queue nobody reads.
	for tok := uint64(1); ; tok++ {
		if err := b.PublishReturnable(ctx, subj, []byte("x"), tok, onReturn); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-returned:
			t.Logf("publish %d returned (token %d)", tok, got)
			return
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("publishes to a group without members were not returned")
		}
	}
}

// TestBusyMemberTakesLess: a group member whose handler blocks holds at
// most its prefetch, set in the URL or the default, and the others take
// the rest.
func TestBusyMemberTakesLess(t *testing.T) {
	t.Parallel()
	addr := testAddr(t)
	for _, prefetch := range []int{2, rabbitmq.DefaultPrefetch} {
		t.Run(strconv.Itoa(prefetch), func(t *testing.T) {
			t.Parallel()
			query := ""
			if prefetch != rabbitmq.DefaultPrefetch {
				query = "?prefetch=" + strconv.Itoa(prefetch)
			}
			busyMemberTakesLess(t, "amqp://guest:guest@"+addr+"/"+query, prefetch)
		})
	}
}

func busyMemberTakesLess(t *testing.T, url string, prefetch int) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	busy, free, pub := dial(t, url), dial(t, url), dial(t, url)
	defer pub.Close()
	defer free.Close()
	defer busy.Close()
	subj := uniqueSubject("busy")
	release := make(chan struct{})
	var busyGot, freeGot atomic.Int64
	if _, err := busy.QueueSubscribe(ctx, subj, "g", func(hctx context.Context, _ []byte) {
		busyGot.Add(1)
		select {
		case <-release:
		case <-hctx.Done():
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := free.QueueSubscribe(ctx, subj, "g", func(context.Context, []byte) { freeGot.Add(1) }); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if err := pub.Publish(ctx, subj, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	// The blocked member holds at most its prefetch; the free one takes
	// everything else.
	eventually(t, 10*time.Second, "the free member to take the rest", func() bool { return freeGot.Load() >= int64(n-prefetch) })
	close(release)
	eventually(t, 10*time.Second, "every message", func() bool { return busyGot.Load()+freeGot.Load() == n })
	if got := busyGot.Load(); got > int64(prefetch) {
		t.Errorf("blocked member got %d messages, want at most its prefetch %d", got, prefetch)
	}
	t.Logf("blocked member %d, free member %d", busyGot.Load(), freeGot.Load())
}
