package telemetry

import (
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestChildrenCaches: a key's child is made once and is the vector's own,
// so what is counted through the cache is what the vector reports.
func TestChildrenCaches(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_total"}, []string{"code"})
	var c Children[string, prometheus.Counter]
	made := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 8 {
		wg.Go(func() {
			for i := range 100 {
				code := strconv.Itoa(200 + i%3)
				c.Get(code, func() prometheus.Counter {
					mu.Lock()
					made++
					mu.Unlock()
					return vec.WithLabelValues(code)
				}).Inc()
			}
		})
	}
	wg.Wait()
	for code, want := range map[string]float64{"200": 272, "201": 264, "202": 264} {
		if got := testutil.ToFloat64(vec.WithLabelValues(code)); got != want {
			t.Errorf("code %s counted %v, want %v", code, got, want)
		}
	}
	// Two goroutines may both miss a new key and both make its child
	// (the same child of the vector); never more than one each.
	if made < 3 || made > 3*8 {
		t.Errorf("children made %d times for 3 keys by 8 goroutines", made)
	}
}

// TestChildrenBounded: at maxChildren, a new key empties the cache and is
// kept, at most once every refillEvery, so a cache whose keys churn
// (instances replaced by a rollout) comes to hold the keys in use; in
// between, keys past the bound are not cached (a mesh with more keys than
// the bound pays no write lock and refill per call).
func TestChildrenBounded(t *testing.T) {
	var c Children[int, int]
	fill := func(from int) {
		for k := from; len(c.m) < maxChildren; k++ {
			c.Get(k, func() int { return k })
		}
	}
	fill(0)
	made := 0
	for range 3 {
		if got := c.Get(maxChildren+5, func() int { made++; return -1 }); got != -1 {
			t.Fatalf("Get past the bound = %d, want what child made", got)
		}
	}
	if made != 1 || len(c.m) != 1 {
		t.Errorf("a key past the bound: made %d times in 3 Gets, %d children kept; want 1 and 1", made, len(c.m))
	}
	if got := c.Get(7, func() int { return 70 }); got != 70 || len(c.m) != 2 {
		t.Errorf("a key from before = %d with %d kept, want a new child 70 and 2 kept", got, len(c.m))
	}
	// Full again within refillEvery: a new key is made each time, not kept.
	fill(1 << 20)
	made = 0
	for range 3 {
		if got := c.Get(-1, func() int { made++; return -2 }); got != -2 {
			t.Fatalf("Get past the bound = %d, want what child made", got)
		}
	}
	if made != 3 || len(c.m) != maxChildren {
		t.Errorf("full again within refillEvery: made %d times in 3 Gets, %d kept; want 3 and %d", made, len(c.m), maxChildren)
	}
	// After refillEvery, the next new key empties it again.
	c.emptied.Add(-int64(refillEvery))
	if c.Get(-1, func() int { return -2 }); len(c.m) != 1 {
		t.Errorf("full for refillEvery: %d kept after a new key, want 1", len(c.m))
	}
}

// BenchmarkChildren: a counter's child through the cache, with keys within
// the bound and with five times more (where the cache must cost little
// more than the vector's own lookup), against the vector's lookup alone.
func BenchmarkChildren(b *testing.B) {
	labels := make([]string, 5*maxChildren)
	for i := range labels {
		labels[i] = strconv.Itoa(i)
	}
	for _, bc := range []struct {
		name  string
		keys  int
		cache bool
	}{
		{"cached-1k", 1024, true}, {"plain-1k", 1024, false},
		{"cached-20k", len(labels), true}, {"plain-20k", len(labels), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_total"}, []string{"k"})
			var c Children[int, prometheus.Counter]
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					k := i * 7919 % bc.keys
					if bc.cache {
						c.Get(k, func() prometheus.Counter { return vec.WithLabelValues(labels[k]) }).Inc()
					} else {
						vec.WithLabelValues(labels[k]).Inc()
					}
				}
			})
		})
	}
}
