package ambassador

import (
	"context"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/reason"
)

// withinCapacity answers a call overloaded at once, without sending it,
// when this ambassador alone already has more of the service's calls in
// flight than the service's healthy instances announce they can take
// before the call's deadline, or for a call without one before its head is
// due (their concurrency, and the line each admits
// in the time left: see adapter/workers.go), with a margin of capacityMargin
// for announcements up to one interval old. Such a call would be refused
// by an instance anyway; refusing it here costs the broker, the adapter
// and the caller's wait nothing. It matters most when many callers arrive
// at once before anything was measured: a cold service's first wave is
// answered here, not queued over the broker.
//
// The count is this ambassador's own (other callers only add to the
// instances' load) and the limit twice the instances' own, so with
// current announcements the check is no stricter than the instances. It
// counts a call until it ends, retry backoff and a wait for a breaker
// slot included, though those hold no adapter worker. Calls at a version,
// and services with an instance that announces no concurrency limit or no
// service time (an adapter older than the check), are not checked.
func (a *Ambassador) withinCapacity(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		reg := c.lane.reg
		if reg == nil || c.Version != "" {
			return next(ctx, c)
		}
		s := a.serviceOf(c)
		n := s.inflight.Add(1)
		defer s.inflight.Add(-1)
		if limit, ok := s.room.limit(reg.Healthy(c.Route.Service), c.answerBy()); ok && n > limit {
			a.metrics.Resilience.Shed.WithLabelValues(c.Route.Service).Inc()
			e := reason.Errorf(reason.Overloaded, "this sidecar has %d calls to service %q in flight, more than its instances can take before the call's deadline%s",
				n-1, c.Route.Service, a.onLane(c))
			e.RetryAfter = time.Second
			return e
		}
		return next(ctx, c)
	}
}

// capacityMargin is how many times what the instances announce they can
// take an ambassador lets through: an announcement is up to one interval
// old, and the application may have got faster since.
const capacityMargin = 2

// room is what a service's healthy instances can take, worked out once
// per registry snapshot.
type room struct{ last atomic.Pointer[roomOf] }

// roomOf is the sum of a snapshot's announcements.
type roomOf struct {
	snap *discovery.Instance // the snapshot's first instance: its identity
	n    int
	// unbounded: an instance announces no concurrency limit.
	unbounded bool
	// fresh is the concurrency of the instances that have not measured a
	// call yet, measured that of the others, whose shortest service time
	// is cost.
	fresh, measured int64
	cost            time.Duration
}

// limit is how many calls in flight the instances in healthy can take
// before deadline (zero: none), with the margin; ok is false when there
// is no limit to apply.
func (r *room) limit(healthy []discovery.Instance, deadline time.Time) (limit int64, ok bool) {
	if len(healthy) == 0 {
		return 0, false
	}
	of := r.last.Load()
	if of == nil || of.snap != unsafe.SliceData(healthy) || of.n != len(healthy) {
		of = sumRoom(healthy)
		r.last.Store(of)
	}
	if of.unbounded {
		return 0, false
	}
	// Before it has measured a call, an adapter lets one round of calls
	// wait behind the ones it serves; after, as many rounds as fit in the
	// time left (the margins are adapter/workers.go's inTime).
	total := 2 * of.fresh
	if of.measured > 0 {
		if deadline.IsZero() {
			return 0, false
		}
		left := time.Until(deadline) - of.cost - of.cost/2 - answerMargin
		total += of.measured * (1 + max(int64(left/of.cost), 0))
	}
	return capacityMargin * total, true
}

// answerMargin is the time an adapter keeps for an answer's way back when
// it decides whether a call can wait.
const answerMargin = 10 * time.Millisecond

func sumRoom(healthy []discovery.Instance) *roomOf {
	of := &roomOf{snap: unsafe.SliceData(healthy), n: len(healthy)}
	for i := range healthy {
		in := &healthy[i]
		switch {
		case in.Concurrency <= 0 || in.NoServiceTime:
			of.unbounded = true // no limit, or one an older adapter does not size
			return of
		case in.ServiceTime <= 0:
			of.fresh += int64(in.Concurrency)
		default:
			of.measured += int64(in.Concurrency)
			if of.cost == 0 || in.ServiceTime < of.cost {
				of.cost = in.ServiceTime
			}
		}
	}
	return of
}
