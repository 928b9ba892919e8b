package telemetry

import "sync"

// maxChildren bounds a Children cache: a new key past it empties the
// cache, which then refills with the keys in use (the children themselves
// live on in their vectors).
const maxChildren = 4096

// Children caches the children of a metric vector (the Counter or Observer
// of one set of label values) by a comparable key, for a call's metrics: a
// map lookup on the key instead of client_golang's hashing and checking of
// every label value on each call (8 % of BenchmarkAmbassadorHTTP). Vectors
// here never delete a child, so a cached one stays the vector's. Safe for
// concurrent use.
type Children[K comparable, M any] struct {
	mu sync.RWMutex
	m  map[K]M
}

// Get returns the child cached for k, or caches and returns what child
// makes (the vector's WithLabelValues for the values k stands for).
func (c *Children[K, M]) Get(k K, child func() M) M {
	c.mu.RLock()
	m, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return m
	}
	m = child()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[K]M{}
	}
	if len(c.m) >= maxChildren {
		clear(c.m)
	}
	c.m[k] = m
	return m
}
