package telemetry

import (
	"cmp"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultWindow is the span of the sliding window `busmesh top` shows.
const DefaultWindow = 10 * time.Second

// Sides of an edge: the sidecar part that saw the call.
const (
	SideAmbassador = "ambassador"
	SideAdapter    = "adapter"
)

// EdgeKey names an edge as one sidecar part sees it: calls from Caller
// to Service.
type EdgeKey struct {
	Side, Caller, Service string
}

// Window keeps each edge's traffic over the last span, in one-second
// slots: requests, failures (5xx class) and a latency histogram, plus the
// calls in flight. The record functions feed it with the calls they count;
// the admin API reads it for `busmesh top` and `busmesh stats`.
type Window struct {
	span  time.Duration
	slots int
	now   func() time.Time

	mu    sync.RWMutex
	edges map[EdgeKey]*Edge
}

// NewWindow returns a Window over span (at least a second).
func NewWindow(span time.Duration) *Window {
	n := max(int(span/time.Second), 1)
	return &Window{span: time.Duration(n) * time.Second, slots: n, now: time.Now, edges: map[EdgeKey]*Edge{}}
}

// Edge is one edge's window. Its methods are safe for concurrent use.
type Edge struct {
	key      EdgeKey
	w        *Window
	gauge    prometheus.Gauge // the in-flight gauge of the edge, nil if none
	inflight atomic.Int64

	mu    sync.Mutex
	slots []slot
}

type slot struct {
	sec                int64 // unix second the slot counts
	requests, failures uint64
	latency            [latencyBuckets]uint32
}

// Edge returns the window of an edge, made on first use. gauge, when not
// nil, is the in-flight gauge Start and Done move with the window's count.
func (w *Window) Edge(k EdgeKey, gauge func() prometheus.Gauge) *Edge {
	w.mu.RLock()
	e := w.edges[k]
	w.mu.RUnlock()
	if e != nil {
		return e
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if e = w.edges[k]; e == nil {
		e = &Edge{key: k, w: w, slots: make([]slot, w.slots)}
		if gauge != nil {
			e.gauge = gauge()
		}
		w.edges[k] = e
	}
	return e
}

// Key returns the edge's name.
func (e *Edge) Key() EdgeKey { return e.key }

// Start counts a call in flight on the edge.
func (e *Edge) Start() {
	e.inflight.Add(1)
	if e.gauge != nil {
		e.gauge.Inc()
	}
}

// Leave takes back a Start without counting a call: the call moved to
// another edge.
func (e *Edge) Leave() {
	e.inflight.Add(-1)
	if e.gauge != nil {
		e.gauge.Dec()
	}
}

// Done ends a call Start counted: it is no longer in flight, and it took
// latency; failed says it failed (a 5xx class).
func (e *Edge) Done(failed bool, latency time.Duration) {
	e.Leave()
	sec := e.w.now().Unix()
	e.mu.Lock()
	s := &e.slots[sec%int64(len(e.slots))]
	if s.sec != sec {
		*s = slot{sec: sec}
	}
	s.requests++
	if failed {
		s.failures++
	}
	s.latency[bucketOf(latency)]++
	e.mu.Unlock()
}

// EdgeStats is an edge's traffic over the window.
type EdgeStats struct {
	EdgeKey
	// Requests and Failures count the calls that ended in the window.
	Requests, Failures uint64
	// Rate is requests per second over the window.
	Rate float64
	// P50 and P99 are latency quantiles over the window, to within a
	// bucket (19%); 0 without calls.
	P50, P99 time.Duration
	// Inflight counts the calls in flight now.
	Inflight int64
}

// SuccessRate is the share of calls that did not fail, 1 without calls.
func (s *EdgeStats) SuccessRate() float64 {
	if s.Requests == 0 {
		return 1
	}
	return 1 - float64(s.Failures)/float64(s.Requests)
}

// Snapshot returns every edge's stats over the window that ends now (the
// current, partial second included), sorted by side, service and caller;
// and each service's, on each side, over all its callers (Caller empty).
func (w *Window) Snapshot() (edges, services []EdgeStats) {
	w.mu.RLock()
	all := make([]*Edge, 0, len(w.edges))
	for _, e := range w.edges {
		all = append(all, e)
	}
	w.mu.RUnlock()
	now := w.now().Unix()
	oldest := now - int64(w.slots) + 1
	type sum struct {
		st  EdgeStats
		lat [latencyBuckets]uint64
	}
	perService := map[EdgeKey]*sum{}
	for _, e := range all {
		var s sum
		s.st = EdgeStats{EdgeKey: e.key, Inflight: e.inflight.Load()}
		e.mu.Lock()
		for i := range e.slots {
			sl := &e.slots[i]
			if sl.sec < oldest || sl.sec > now {
				continue
			}
			s.st.Requests += sl.requests
			s.st.Failures += sl.failures
			for b, n := range sl.latency {
				s.lat[b] += uint64(n)
			}
		}
		e.mu.Unlock()
		edges = append(edges, w.finish(s.st, &s.lat))
		k := EdgeKey{Side: e.key.Side, Service: e.key.Service}
		agg := perService[k]
		if agg == nil {
			agg = &sum{st: EdgeStats{EdgeKey: k}}
			perService[k] = agg
		}
		agg.st.Requests += s.st.Requests
		agg.st.Failures += s.st.Failures
		agg.st.Inflight += s.st.Inflight
		for b, n := range s.lat {
			agg.lat[b] += n
		}
	}
	for _, agg := range perService {
		services = append(services, w.finish(agg.st, &agg.lat))
	}
	order := func(a, b EdgeStats) int {
		return cmp.Or(cmp.Compare(a.Side, b.Side), cmp.Compare(a.Service, b.Service), cmp.Compare(a.Caller, b.Caller))
	}
	slices.SortFunc(edges, order)
	slices.SortFunc(services, order)
	return edges, services
}

// finish fills in the rate and quantiles of st from its latencies.
func (w *Window) finish(st EdgeStats, lat *[latencyBuckets]uint64) EdgeStats {
	st.Rate = float64(st.Requests) / w.span.Seconds()
	st.P50, st.P99 = bucketQuantile(lat, st.Requests, 0.5), bucketQuantile(lat, st.Requests, 0.99)
	return st
}

// Span is the window's length.
func (w *Window) Span() time.Duration { return w.span }

// bucketQuantile is the q quantile of total latencies counted in lat: the
// geometric middle of the bucket it falls in.
func bucketQuantile(lat *[latencyBuckets]uint64, total uint64, q float64) time.Duration {
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range lat {
		seen += n
		if seen >= rank {
			return time.Duration(math.Exp2((float64(i)+0.5)/4) * float64(time.Microsecond))
		}
	}
	return 0
}
