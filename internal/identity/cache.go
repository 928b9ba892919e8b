package identity

import (
	"sync"
	"sync/atomic"
)

// boundedCache is a map of at most max entries. Adding to a full cache
// evicts an entry not read since the last eviction passed it (the clock
// algorithm's second chance, over the map's random iteration order), so
// peers in use stay and cost stays bounded. A hit takes a read lock and no
// allocation. Safe for concurrent use.
type boundedCache[K comparable, V any] struct {
	mu  sync.RWMutex
	m   map[K]*cacheEntry[V]
	max int
}

type cacheEntry[V any] struct {
	v    V
	used atomic.Bool
}

func newBoundedCache[K comparable, V any](maxEntries int) *boundedCache[K, V] {
	return &boundedCache[K, V]{m: make(map[K]*cacheEntry[V]), max: max(maxEntries, 1)}
}

func (c *boundedCache[K, V]) get(k K) (V, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok {
		var zero V
		return zero, false
	}
	if !e.used.Load() { // a store only when needed keeps hot entries' cache lines shared
		e.used.Store(true)
	}
	return e.v, true
}

// add stores v under k unless k is already there, and returns what the
// cache holds for k afterwards: callers that raced to compute the same
// value all use the first one.
func (c *boundedCache[K, V]) add(k K, v V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		return e.v
	}
	if len(c.m) >= c.max {
		c.evictLocked()
	}
	c.m[k] = &cacheEntry[V]{v: v}
	return v
}

func (c *boundedCache[K, V]) remove(k K) {
	c.mu.Lock()
	delete(c.m, k)
	c.mu.Unlock()
}

func (c *boundedCache[K, V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// evictLocked removes one entry: the first unused one, clearing the used
// mark of those it passes; after one full pass every mark is clear, so the
// second pass ends at its first entry.
func (c *boundedCache[K, V]) evictLocked() {
	for range 2 {
		for k, e := range c.m {
			if !e.used.Swap(false) {
				delete(c.m, k)
				return
			}
		}
	}
}
