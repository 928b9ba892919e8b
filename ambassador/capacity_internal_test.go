package ambassador

import (
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/discovery"
)

func TestRoomLimit(t *testing.T) {
	in := func(concurrency int, cost time.Duration) discovery.Instance {
		return discovery.Instance{Concurrency: concurrency, ServiceTime: cost}
	}
	soon := time.Now().Add(2 * time.Second)
	for _, c := range []struct {
		name     string
		healthy  []discovery.Instance
		deadline time.Time
		want     int64 // -1: no limit
	}{
		{"none known", nil, soon, -1},
		{"unbounded instance", []discovery.Instance{in(4, 0), in(0, 0)}, soon, -1},
		{"an adapter that does not announce its service time", []discovery.Instance{in(4, 0), {Concurrency: 4, NoServiceTime: true}}, soon, -1},
		// Unmeasured, an adapter serves 4 and lets 4 wait: 8, twice.
		{"fresh", []discovery.Instance{in(4, 0)}, soon, 16},
		{"fresh, no deadline", []discovery.Instance{in(4, 0)}, time.Time{}, 16},
		// 2 s left, 50 ms a call: 2000-75-10 = 1915 ms, 38 rounds waiting.
		{"measured", []discovery.Instance{in(4, 50*time.Millisecond)}, soon, 2 * 4 * 39},
		{"measured, no deadline", []discovery.Instance{in(4, 50*time.Millisecond)}, time.Time{}, -1},
		{"measured, deadline passed", []discovery.Instance{in(4, 50*time.Millisecond)}, time.Now().Add(-time.Second), 2 * 4},
		// A new instance adds its own round; the measured keep theirs (the
		// fastest's cost counts for all).
		{"mixed", []discovery.Instance{in(4, 100*time.Millisecond), in(2, 0), in(4, 50*time.Millisecond)}, soon, 2 * (2*2 + 8*39)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r room
			limit, ok := r.limit(c.healthy, c.deadline)
			if !ok {
				limit = -1
			}
			// Time passes between the deadline's making and the check: the
			// measured cases may lose one round.
			if limit != c.want && !(c.want > 0 && limit < c.want && limit >= c.want-2*8) {
				t.Errorf("limit %d, want %d", limit, c.want)
			}
		})
	}
}

// TestRoomFollowsSnapshot: the sum is kept for one registry snapshot and
// worked out again for the next.
func TestRoomFollowsSnapshot(t *testing.T) {
	var r room
	a := []discovery.Instance{{Concurrency: 4}}
	if l, _ := r.limit(a, time.Time{}); l != 16 {
		t.Fatalf("limit %d, want 16", l)
	}
	if l, _ := r.limit(a, time.Time{}); l != 16 {
		t.Fatalf("limit %d on the same snapshot, want 16", l)
	}
	b := []discovery.Instance{{Concurrency: 4}, {Concurrency: 8}}
	if l, _ := r.limit(b, time.Time{}); l != 48 {
		t.Fatalf("limit %d on a new snapshot, want 48", l)
	}
}

// BenchmarkRoomLimit prices withinCapacity's check on a call: the sum is
// kept for the snapshot, so a call costs an atomic load and arithmetic.
func BenchmarkRoomLimit(b *testing.B) {
	healthy := make([]discovery.Instance, 50)
	for i := range healthy {
		healthy[i] = discovery.Instance{Concurrency: 64, ServiceTime: 5 * time.Millisecond}
	}
	var r room
	deadline := time.Now().Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.limit(healthy, deadline); !ok {
			b.Fatal("no limit")
		}
	}
}
