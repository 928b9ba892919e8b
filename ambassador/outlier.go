package ambassador

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Outlier ejection wraps the direct-mode picks, as grpc-go's
// outlierdetection balancer wraps its picker: every pick's done reports
// how the call went (judge); an instance whose calls fail Consecutive
// times in a row is left out of the picks (usable) for a time that grows
// with each ejection, while its service has fewer than its share of
// instances out. The instance's circuit breaker sits beside it, fed by
// the same reports.

// serviceGuard counts a service's instances and those ejected, for the
// ejection cap.
type serviceGuard struct {
	known     int          // stats kept for the service (under balancer.mu)
	instances atomic.Int32 // healthy instances at the last pick
	mu        sync.Mutex
	ejected   int
}

// ejection is an instance's outlier state.
type ejection struct {
	consecutive atomic.Int32
	until       atomic.Int64 // unix nanoseconds; 0 when not ejected
	mu          sync.Mutex
	times       int   // ejections, for the growing time out
	lastEnd     int64 // when the last ejection ended
}

// usable reports whether st may be picked now: not ejected, and its
// circuit not open. An instance whose ejection is over returns here.
func (b *balancer) usable(st *instanceStats, p config.ServicePolicy, now int64) bool {
	if until := st.ej.until.Load(); until != 0 {
		if now < until {
			return false
		}
		b.restore(st, now)
	}
	return p.InstanceBreaker == nil || st.brk.allows(now)
}

// judge hears how a call to st went: it feeds the instance's breaker and
// its outlier ejection.
func (st *instanceStats) judge(rt *Route, d doneInfo, probe bool) {
	if rt == nil {
		return
	}
	if d.reason == reason.Cancelled {
		// The caller went away (perhaps before the request went out): this
		// tells nothing of the instance. A probe it took may go to another.
		if probe {
			st.brk.probes.Add(1)
		}
		return
	}
	now := time.Now().UnixNano()
	if cfg := rt.Policy.InstanceBreaker; cfg != nil && cfg.ConsecutiveFailures+cfg.FailurePercent > 0 {
		if s := st.brk.record(cfg, now, d.failed, probe); s >= 0 {
			breakerChanged(st.b.logger, st.b.metrics, rt.Service, st.instance, s)
		}
	}
	o := rt.Policy.Outlier
	if o == nil || o.Consecutive == 0 || !rt.direct() {
		return
	}
	if !d.failed {
		if st.ej.consecutive.Load() != 0 {
			st.ej.consecutive.Store(0)
		}
		return
	}
	if st.ej.consecutive.Add(1) >= int32(o.Consecutive) {
		st.b.eject(rt.Service, st, o, now)
	}
}

// eject takes st out of the picks, unless its service has its share of
// instances out already.
func (b *balancer) eject(service string, st *instanceStats, o *config.Outlier, now int64) {
	svc := st.svc
	svc.mu.Lock()
	n := int(svc.instances.Load())
	allowed := n * o.MaxEjectedPercent / 100
	if n >= 2 {
		allowed = max(allowed, 1) // at least one of two or more
	}
	if svc.ejected >= allowed || st.ej.until.Load() != 0 {
		svc.mu.Unlock()
		return
	}
	svc.ejected++
	ejected := svc.ejected
	svc.mu.Unlock()

	st.ej.mu.Lock()
	if st.ej.lastEnd != 0 && now-st.ej.lastEnd > int64(o.MaxEjection) {
		st.ej.times = 0 // healthy for long enough: start over
	}
	st.ej.times++
	d := min(o.BaseEjection.D()*time.Duration(st.ej.times), o.MaxEjection.D())
	st.ej.until.Store(now + int64(d))
	st.ej.consecutive.Store(0)
	times := st.ej.times
	st.ej.mu.Unlock()

	if b.metrics != nil {
		b.metrics.Ejections.WithLabelValues(service).Inc()
		b.metrics.Ejected.WithLabelValues(service).Set(float64(ejected))
	}
	b.logger.Warn("instance ejected: its calls keep failing", telemetry.KeyService, service, "instance", st.instance,
		"for", d.String(), "ejections", times, "consecutive_failures", o.Consecutive)
}

// restore brings an ejected instance back once its time is up.
func (b *balancer) restore(st *instanceStats, now int64) {
	until := st.ej.until.Load()
	if until == 0 || now < until || !st.ej.until.CompareAndSwap(until, 0) {
		return
	}
	st.ej.mu.Lock()
	st.ej.lastEnd = now
	st.ej.mu.Unlock()
	ejected := st.svc.release()
	if b.metrics != nil {
		b.metrics.Ejected.WithLabelValues(st.service).Set(float64(ejected))
	}
	b.logger.Info("ejected instance returns to the picks", telemetry.KeyService, st.service, "instance", st.instance)
}

// release counts an ejection over; it returns how many remain.
func (g *serviceGuard) release() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ejected > 0 {
		g.ejected--
	}
	return g.ejected
}

// forget is called when st's instance leaves the mesh: an ejection it
// had no longer counts against its service's share.
func (st *instanceStats) forget() {
	if until := st.ej.until.Load(); until != 0 && st.ej.until.CompareAndSwap(until, 0) {
		st.svc.release()
	}
}

// grpcFailure reports whether a gRPC status says the server failed (as
// Envoy's and grpc-go's outlier detection count them).
func grpcFailure(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Internal, codes.Unknown, codes.DeadlineExceeded, codes.DataLoss:
		return true
	}
	return false
}
