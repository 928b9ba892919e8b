package ambassador

import (
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// idleDecay is how an instance's cost fades while it gets no calls: by e
// in this time. A slow instance, once measured, is left alone for about
// this long, then tried again in case it recovered.
const idleDecay = 10 * time.Second

// The latency estimate is an EWMA over time that rises faster than it
// falls: samples above it weigh in with riseWindow as the time constant,
// samples below with fallWindow. An instance that turns slow is avoided
// within a few tens of milliseconds of calls, and one short hiccup (which
// hits every instance alike) moves it little.
const (
	riseWindow = 50 * time.Millisecond
	fallWindow = 250 * time.Millisecond
)

// defaultRTT is the latency assumed of an instance not yet measured before
// any instance is.
const defaultRTT = time.Millisecond

// balancer picks instances in direct mode: power of two choices over the
// cost latency × (calls in flight + 1), the latency a peak-sensitive EWMA
// (quick to rise, slower to fall) of what the ambassador measured.
type balancer struct {
	subjects broker.Subjects
	logger   *slog.Logger
	metrics  *telemetry.Resilience
	mu       sync.Mutex
	stats    map[instanceKey]*instanceStats
	services map[string]*serviceGuard // outlier ejection's counts, by service
	// typical is a running average of every latency measured, in
	// nanoseconds: the latency assumed of an instance not yet measured, so
	// a new instance gets its share of calls at once, and no more than its
	// share until it has answered.
	typical atomic.Int64
}

type instanceKey struct{ service, sidecar, instance string }

// instanceStats is what the ambassador measured of one instance.
type instanceStats struct {
	subject  string // broker.InstanceSubject, built once
	instance string
	b        *balancer
	inflight atomic.Int64
	service  string        // the instance's service, for logs and metrics
	svc      *serviceGuard // its service's ejection counts
	brk      breaker       // the instance's circuit breaker
	ej       ejection      // its outlier ejection

	mu    sync.Mutex
	ewma  float64 // nanoseconds
	stamp int64   // unix nanoseconds of the last sample
}

func newBalancer(subjects broker.Subjects, logger *slog.Logger, m *telemetry.Resilience) *balancer {
	return &balancer{subjects: subjects, logger: telemetry.OrDiscard(logger), metrics: m, stats: map[instanceKey]*instanceStats{},
		services: map[string]*serviceGuard{}}
}

// pick chooses an instance among the healthy ones, honouring the policy's
// version (strictly) and zone (while any there is healthy). It returns nil
// when none qualifies. avoid, when set, is an instance not to pick again.
func (b *balancer) pick(service string, healthy []discovery.Instance, p config.ServicePolicy, avoid *instanceStats) *instanceStats {
	st, _ := b.pickAdmitted(service, healthy, p, avoid)
	return st
}

// pickAdmitted is pick, also reporting whether the call is a probe of the
// instance's half-open breaker.
func (b *balancer) pickAdmitted(service string, healthy []discovery.Instance, p config.ServicePolicy, avoid *instanceStats) (best *instanceStats, probe bool) {
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
	bestCost := math.Inf(1)
	try := func(i int) {
		st := b.statsFor(service, healthy, i)
		if st == avoid || !b.usable(st, p, now) {
			return
		}
		if c := st.cost(now, b.typical.Load()); c < bestCost {
			best, bestCost = st, c
		}
	}
	switch n := len(cand); n {
	case 0:
		return nil, false
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
		if best == nil { // both were the one to avoid, ejected or open
			for _, k := range cand {
				try(k)
			}
		}
	}
	if best == nil && len(cand) > 0 {
		// Every candidate is ejected or has its circuit open: rather than
		// fail the call, pick as if none were (Envoy's panic mode).
		for _, k := range cand {
			if st := b.statsFor(service, healthy, k); st != avoid {
				if c := st.cost(now, b.typical.Load()); c < bestCost {
					best, bestCost = st, c
				}
			}
		}
	}
	if best != nil {
		if n := int32(len(cand)); best.svc.instances.Load() != n {
			best.svc.instances.Store(n)
		}
		if p.InstanceBreaker != nil {
			_, probe, _ = best.brk.admit(now)
		}
	}
	return best, probe
}

// statsFor returns the stats of healthy[i], made on first sight. The
// stats of a service's instances no longer healthy are dropped when they
// outnumber the healthy ones: the map stays the size of the mesh whatever
// its churn, and a service of thousands of instances appearing one by one
// costs a sweep now and then, not one per instance.
func (b *balancer) statsFor(service string, healthy []discovery.Instance, i int) *instanceStats {
	inst := &healthy[i]
	k := instanceKey{service, inst.Sidecar, inst.Name}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stats[k]
	if st != nil {
		return st
	}
	svc := b.services[service]
	if svc == nil {
		svc = &serviceGuard{}
		b.services[service] = svc
	}
	if svc.known >= 2*len(healthy)+16 {
		b.sweep(service, svc, healthy)
	}
	st = &instanceStats{subject: b.subjects.Instance(service, inst.Name), instance: inst.Name, b: b, service: service, svc: svc}
	b.stats[k] = st
	svc.known++
	return st
}

// sweep drops the stats of service's instances that are not in healthy;
// b.mu is held.
func (b *balancer) sweep(service string, svc *serviceGuard, healthy []discovery.Instance) {
	live := make(map[[2]string]bool, len(healthy))
	for _, h := range healthy {
		live[[2]string{h.Sidecar, h.Name}] = true
	}
	for old, st := range b.stats {
		if old.service == service && !live[[2]string{old.sidecar, old.instance}] {
			st.forget()
			delete(b.stats, old)
			svc.known--
		}
	}
}

// cost is the decayed latency estimate times the calls in flight plus one;
// typical stands in for the estimate until there is one.
func (st *instanceStats) cost(now, typical int64) float64 {
	st.mu.Lock()
	ewma, stamp := st.ewma, st.stamp
	st.mu.Unlock()
	if stamp == 0 {
		ewma = float64(typical)
		if typical == 0 {
			ewma = float64(defaultRTT)
		}
	} else if idle := now - stamp; idle > 0 {
		ewma *= math.Exp(-float64(idle) / float64(idleDecay))
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
	if t := st.b.typical.Load(); t == 0 {
		st.b.typical.Store(int64(rtt))
	} else {
		st.b.typical.Store(t + (int64(rtt)-t)/16) // racing updates may lose one: an estimate
	}
	now := time.Now().UnixNano()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.stamp == 0 {
		st.ewma = float64(rtt) // the first measurement
	} else {
		window := fallWindow
		if float64(rtt) > st.ewma {
			window = riseWindow
		}
		w := math.Exp(-float64(now-st.stamp) / float64(window))
		st.ewma = st.ewma*w + float64(rtt)*(1-w)
	}
	st.stamp = now
}

// pickResult is where a call was sent: the subject, and in direct mode the
// instance picked, which hears back how the call went through done (as
// grpc-go's balancer.PickResult.Done), so estimates, and later breakers and
// outlier ejection, learn from every call.
type pickResult struct {
	subject string
	stats   *instanceStats // nil in queue mode
	route   *Route         // the route picked for, with its policy
	probe   bool           // the call is a probe of the instance's half-open breaker
}

// doneInfo is what a pick hears back: how long the answer took, whether
// that time is a measurement of the instance, and the call's error class.
type doneInfo struct {
	latency time.Duration
	sample  bool
	reason  reason.Reason // None when the instance answered
	// failed says the call failed on the instance's side: a 5xx answer,
	// a gateway error or a timeout (breakers and ejection count these).
	failed bool
}

// done reports the outcome of the call sent by pick. It must be called
// once per successful pick.
func (p pickResult) done(d doneInfo) {
	if p.stats != nil {
		p.stats.finish(d.latency, d.sample)
		p.stats.judge(p.route, d, p.probe)
	}
}

// pick chooses where call c goes: its subject in queue mode, an instance
// of its version in direct mode, other than avoid while another may take
// it. It fails when no healthy instance qualifies.
func (a *Ambassador) pick(c *Call, avoid *instanceStats) (pickResult, *reason.Error) {
	rt := c.Route
	l := c.lane
	if !rt.direct() || l.reg == nil {
		return pickResult{subject: c.Subject, route: rt}, nil
	}
	policy := rt.Policy
	policy.Version = c.Version
	healthy := l.reg.Healthy(rt.Service)
	st, probe := l.lb.pickAdmitted(rt.Service, healthy, policy, avoid)
	if st == nil && avoid != nil {
		st, probe = l.lb.pickAdmitted(rt.Service, healthy, policy, nil)
	}
	if st == nil {
		return pickResult{}, noHealthy(rt.Service, c.Version)
	}
	st.start()
	return pickResult{subject: st.subject, stats: st, route: rt, probe: probe}, nil
}
