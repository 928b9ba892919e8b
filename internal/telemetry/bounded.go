package telemetry

import "sync"

// Bounded keeps a label from growing without end: it admits the first Max
// distinct values it is given and answers Unknown for any other, so a
// flood of made-up values (callers named in envelopes, instances named in
// answers) costs one series, not one each. Safe for concurrent use; an
// admitted value costs a read lock and a map lookup.
type Bounded struct {
	// Max is how many distinct values are admitted.
	Max int

	mu   sync.RWMutex
	seen map[string]struct{}
}

// Admit returns v when it is (or now becomes) one of the admitted values,
// else Unknown. An empty v is Unknown.
func (b *Bounded) Admit(v string) string {
	if v == "" {
		return Unknown
	}
	b.mu.RLock()
	_, ok := b.seen[v]
	b.mu.RUnlock()
	if ok {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[v]; ok {
		return v
	}
	if len(b.seen) >= b.Max {
		return Unknown
	}
	if b.seen == nil {
		b.seen = map[string]struct{}{}
	}
	b.seen[v] = struct{}{}
	return v
}

// Known reports whether v was admitted, without admitting it.
func (b *Bounded) Known(v string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.seen[v]
	return ok
}
