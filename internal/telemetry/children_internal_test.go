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

// TestChildrenBounded: a key past maxChildren empties the cache and is
// kept, so a cache whose keys churn (instances replaced by a rollout) holds
// the keys in use and at most maxChildren of them.
func TestChildrenBounded(t *testing.T) {
	var c Children[int, int]
	for k := range maxChildren {
		c.Get(k, func() int { return k })
	}
	if len(c.m) != maxChildren {
		t.Fatalf("%d children kept, want %d", len(c.m), maxChildren)
	}
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
}
