package ambassador

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestMirrorCallsBounded: what the mirror keeps of copies awaiting their
// answers is bounded: past maxMirrorCalls a copy is dropped and counted,
// an answer's end forgets its copy, and copies past their deadline (or
// silent, without one) are forgotten by the sweep.
func TestMirrorCallsBounded(t *testing.T) {
	m := telemetry.NewMetrics()
	s := newMirrorSender(bus.NewPublisher(&stalledBroker{release: make(chan struct{})}), "shadow", m, slog.New(slog.DiscardHandler))
	now := time.Now()
	for id := uint64(1); id <= maxMirrorCalls; id++ {
		c := mirrorCopy{service: "orders", id: id, deadline: now.Add(time.Second)}
		if id%2 == 0 {
			c.deadline = time.Time{} // none: kept while its shadow speaks
		}
		if !s.track(c) {
			t.Fatalf("copy %d not tracked, want %d tracked", id, maxMirrorCalls)
		}
	}
	s.send(mirrorCopy{service: "orders", id: maxMirrorCalls + 1, data: []byte("x")})
	if d := testutil.ToFloat64(m.MirrorDropped.WithLabelValues("orders", "shadow", "queue_full")); d != 1 {
		t.Errorf("a copy past %d tracked: %v dropped, want 1", maxMirrorCalls, d)
	}
	if len(s.queue) != 0 {
		t.Errorf("the copy past the bound was queued")
	}
	s.headed(1, &envelope.Response{ID: 1, Status: 200}) // a whole answer
	s.dropped(2, &envelope.Frame{ID: 2, Seq: 1, End: true})
	if _, ok := s.heard(1); ok {
		t.Errorf("copy 1 still tracked after its answer")
	}
	if _, ok := s.heard(2); ok {
		t.Errorf("copy 2 still tracked after its answer's last frame")
	}
	s.sweep(now.Add(time.Second + mirrorLinger + time.Millisecond))
	if n := len(s.calls); n != maxMirrorCalls/2-1 {
		t.Errorf("%d copies kept past their deadline's linger, want the %d without a deadline", n, maxMirrorCalls/2-1)
	}
	s.sweep(time.Now().Add(mirrorSilence + time.Second))
	if n := len(s.calls); n != 0 {
		t.Errorf("%d silent copies kept past %v", n, mirrorSilence)
	}
	s.close()
}
