package telemetry

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxChildren bounds a Children cache. A new key past it is not cached,
// except that once every refillEvery the cache is emptied, to refill with
// the keys in use then (instances come and go; the children themselves
// live on in their vectors). Emptying it on every new key would make a
// mesh with more keys than this pay a write lock and a refill per call,
// slower than no cache.
const (
	maxChildren = 4096
	refillEvery = time.Minute
)

// Children caches the children of a metric vector (the Counter or Observer
// of one set of label values) by a comparable key, for a call's metrics: a
// map lookup on the key instead of client_golang's hashing and checking of
// every label value on each call (8 % of BenchmarkAmbassadorHTTP). Vectors
// here never delete a child, so a cached one stays the vector's. Safe for
// concurrent use.
type Children[K comparable, M any] struct {
	mu      sync.RWMutex
	m       map[K]M
	emptied atomic.Int64 // unix nanoseconds: when the cache was last emptied at the bound
}

// Get returns the child cached for k, or caches and returns what child
// makes (the vector's WithLabelValues for the values k stands for).
func (c *Children[K, M]) Get(k K, child func() M) M {
	c.mu.RLock()
	m, ok := c.m[k]
	full := len(c.m) >= maxChildren
	c.mu.RUnlock()
	if ok {
		return m
	}
	m = child()
	now := time.Now().UnixNano()
	if full && now-c.emptied.Load() < int64(refillEvery) {
		return m // not cached, without the write lock
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[K]M{}
	}
	if len(c.m) >= maxChildren {
		if now-c.emptied.Load() < int64(refillEvery) {
			return m // another call emptied it just now
		}
		c.emptied.Store(now)
		clear(c.m)
	}
	c.m[k] = m
	return m
}
