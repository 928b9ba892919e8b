package ambassador

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// stalledBroker takes no message until released: a broker in trouble.
type stalledBroker struct {
	release   chan struct{}
	published atomic.Int64
}

func (s *stalledBroker) Publish(ctx context.Context, _ string, _ []byte) error {
	select {
	case <-s.release:
		s.published.Add(1)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stalledBroker) Subscribe(context.Context, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *stalledBroker) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *stalledBroker) Close() error { return nil }

// TestMirrorSenderNeverBlocks: copies bound for a broker that takes
// nothing cost the caller no wait; past the queue they are dropped and
// counted, and once the broker takes messages again the queue goes out.
func TestMirrorSenderNeverBlocks(t *testing.T) {
	b := &stalledBroker{release: make(chan struct{})}
	m := telemetry.NewMetrics()
	s := newMirrorSender(bus.NewPublisher(b), "shadow", m, slog.New(slog.DiscardHandler))
	s.start()
	const n = mirrorQueue + 100
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for range n {
			s.send(mirrorCopy{subject: "s", service: "orders", version: "", data: []byte("x")})
		}
	}()
	select {
	case <-sent:
	case <-time.After(5 * time.Second): // not a speed bound: a send that waits would never return
		t.Fatalf("%d sends to a stalled broker did not return", n)
	}
	dropped := testutil.ToFloat64(m.MirrorDropped.WithLabelValues("orders", "shadow", "queue_full"))
	if dropped < n-mirrorQueue-1 || dropped > n-mirrorQueue {
		t.Errorf("dropped %v copies, want %d or %d (the queue, and one in the publisher's hands)", dropped, n-mirrorQueue, n-mirrorQueue-1)
	}
	close(b.release)
	s.close()
	out := testutil.ToFloat64(m.Mirrored.WithLabelValues("orders", "", "shadow"))
	if out+dropped != n || b.published.Load() != int64(out) {
		t.Errorf("sent %v + dropped %v != %d copies (broker took %d)", out, dropped, n, b.published.Load())
	}
}

// TestMirrorSenderCloseBounded: Shutdown does not wait on a stalled
// broker for longer than the flush time.
func TestMirrorSenderCloseBounded(t *testing.T) {
	b := &stalledBroker{release: make(chan struct{})}
	s := newMirrorSender(bus.NewPublisher(b), "shadow", telemetry.NewMetrics(), slog.New(slog.DiscardHandler))
	s.start()
	for range 10 {
		s.send(mirrorCopy{subject: "s", service: "orders", data: []byte("x")})
	}
	began := time.Now()
	s.close()
	if d := time.Since(began); d > mirrorFlush+5*time.Second { // a hang detector, with room for a loaded machine
		t.Errorf("close took %v with a stalled broker, want about %v", d, mirrorFlush)
	}
}
