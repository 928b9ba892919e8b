package ambassador

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
)

// decayWindow is the time constant of the peak-EWMA latency: a sample
// weighs as much as the history after about this long, and an instance
// that gets no calls sees its cost decay toward zero over it, so a slow
// instance is tried again now and then.
const decayWindow = 10 * time.Second

// defaultRTT is the latency assumed of an instance not yet measured: small,
// so a new instance gets calls at once.
const defaultRTT = time.Millisecond

// balancer picks instances in direct mode: power of two choices over the
// cost peak-EWMA latency × (calls in flight + 1). It keeps the ambassador's
// own measurements of each instance.
type balancer struct {
	mu    sync.Mutex
	stats map[instanceKey]*instanceStats
}

type instanceKey struct{ service, sidecar, instance string }

// instanceStats is what the ambassador measured of one instance.
type instanceStats struct {
	subject  string // broker.InstanceSubject, built once
	inflight atomic.Int64

	mu    sync.Mutex
	ewma  float64 // nanoseconds
	stamp int64   // unix nanoseconds of the last sample
}

func newBalancer() *balancer { return &balancer{stats: map[instanceKey]*instanceStats{}} }

// pick chooses an instance among the healthy ones, honouring the policy's
// version (strictly) and zone (while any there is healthy). It returns nil
// when none qualifies. avoid, when set, is an instance not to pick again.
func (b *balancer) pick(service string, healthy []discovery.Instance, p config.ServicePolicy, avoid *instanceStats) *instanceStats {
	// Narrow without allocating in the common case: indexes of candidates.
	var buf [16]int
	cand := buf[:0]
	for i := range healthy {
		if p.Version == "" || healthy[i].Version == p.Version {
			cand = append(cand, i)
		}
	}
	if p.PreferZone != "" {
		inZone := cand[:0:0]
		for _, i := range cand {
			if healthy[i].Zone == p.PreferZone {
				inZone = append(inZone, i)
			}
		}
		if len(inZone) > 0 {
			cand = inZone
		}
	}
	now := time.Now().UnixNano()
	var best *instanceStats
	bestCost := math.Inf(1)
	try := func(i int) {
		st := b.statsFor(service, &healthy[i])
		if st == avoid {
			return
		}
		if c := st.cost(now); c < bestCost {
			best, bestCost = st, c
		}
	}
	switch n := len(cand); n {
	case 0:
		return nil
	case 1:
		try(cand[0])
	default:
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		try(cand[i])
		try(cand[j])
		if best == nil { // both were the one to avoid: n == 2
			for _, k := range cand {
				try(k)
			}
		}
	}
	return best
}

// statsFor returns the stats of an instance, made on first sight.
func (b *balancer) statsFor(service string, inst *discovery.Instance) *instanceStats {
	k := instanceKey{service, inst.Sidecar, inst.Name}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stats[k]
	if st == nil {
		st = &instanceStats{subject: broker.InstanceSubject(service, inst.Name)}
		b.stats[k] = st
	}
	return st
}

// forget drops the stats of instances no longer known.
func (b *balancer) forget(known func(service, instance string) bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.stats {
		if !known(k.service, k.instance) {
			delete(b.stats, k)
		}
	}
}

// cost is the decayed peak-EWMA latency times the calls in flight plus one.
func (st *instanceStats) cost(now int64) float64 {
	st.mu.Lock()
	ewma, stamp := st.ewma, st.stamp
	st.mu.Unlock()
	if stamp == 0 {
		ewma = float64(defaultRTT)
	} else if idle := now - stamp; idle > 0 {
		ewma *= math.Exp(-float64(idle) / float64(decayWindow))
	}
	return ewma * float64(st.inflight.Load()+1)
}

// start counts a call in flight; finish ends it, recording its latency
// when sample is set.
func (st *instanceStats) start() { st.inflight.Add(1) }

func (st *instanceStats) finish(rtt time.Duration, sample bool) {
	st.inflight.Add(-1)
	if !sample {
		return
	}
	st.observe(rtt)
}

func (st *instanceStats) observe(rtt time.Duration) {
	now := time.Now().UnixNano()
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.stamp == 0 || float64(rtt) > st.ewma:
		// Peak: a slow sample counts in full at once.
		st.ewma = float64(rtt)
	default:
		w := math.Exp(-float64(now-st.stamp) / float64(decayWindow))
		st.ewma = st.ewma*w + float64(rtt)*(1-w)
	}
	st.stamp = now
}
