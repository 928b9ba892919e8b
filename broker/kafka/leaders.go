package kafka

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// refreshEvery bounds how often one topic's leaders are asked for: every
// sender and fetcher that meets a moved leader asks, and one answer serves
// them all.
const refreshEvery = 50 * time.Millisecond

// partitions is where a topic's partitions are led: the produce and fetch
// requests this package issues itself go to these brokers through the kgo
// client's own connections.
type partitions struct {
	state atomic.Pointer[partState]
	next  atomic.Uint32 // round-robin position of Publish

	mu      sync.Mutex // one metadata request at a time
	askedAt time.Time
}

// partState is one metadata answer about a topic.
type partState struct {
	id      kadm.TopicID
	leaders []int32 // by partition; -1: no leader now
}

// parts returns the leader cache of topic name, asking the cluster the
// first time.
func (ts *topics) parts(ctx context.Context, name string) (*partitions, error) {
	if p, ok := ts.leaders.Load(name); ok {
		return p.(*partitions), nil
	}
	p, _ := ts.leaders.LoadOrStore(name, &partitions{})
	ps := p.(*partitions)
	if ps.state.Load() == nil {
		if err := ts.refresh(ctx, name, ps); err != nil {
			return nil, err
		}
	}
	return ps, nil
}

// refresh asks the cluster where topic name's partitions are led, unless
// another caller did in the last refreshEvery.
func (ts *topics) refresh(ctx context.Context, name string, ps *partitions) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.state.Load() != nil && time.Since(ps.askedAt) < refreshEvery {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	found, err := ts.lookup(ctx, name)
	if err == nil {
		err = found[name].err
	}
	if err != nil {
		return err
	}
	ps.askedAt = time.Now()
	ps.state.Store(&partState{id: found[name].id, leaders: found[name].leaders})
	return nil
}

// refreshKnown asks again where topic name's partitions are led, if the
// topic is in use: a sender or fetcher met a moved leader.
func (ts *topics) refreshKnown(ctx context.Context, name string) {
	p, ok := ts.leaders.Load(name)
	if !ok {
		return
	}
	_ = ts.refresh(ctx, name, p.(*partitions))
}

// pick returns the next partition of a round-robin and its leader; ok is
// false when that partition has no leader now.
func (ps *partitions) pick() (part, leader int32, ok bool) {
	st := ps.state.Load()
	if st == nil || len(st.leaders) == 0 {
		return 0, -1, false
	}
	n := uint32(len(st.leaders))
	start := ps.next.Add(1)
	for i := range n {
		p := int32((start + i) % n)
		if l := st.leaders[p]; l >= 0 {
			return p, l, true
		}
	}
	return 0, -1, false
}

// leader returns who leads partition p now, -1 when nobody does.
func (ps *partitions) leader(p int32) int32 {
	st := ps.state.Load()
	if st == nil || int(p) >= len(st.leaders) {
		return -1
	}
	return st.leaders[p]
}
