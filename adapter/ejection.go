package adapter

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Self-ejection is outlier ejection done by the instance itself. In queue
// mode the broker, not the caller, picks who serves a call, so an
// ambassador cannot steer around an instance whose application answers
// 503 while its health check passes: it keeps its share of the calls, and
// the retry budget bounds how many are saved. The instance sees every one
// of its answers, so it steps aside: after Consecutive failed answers in a
// row it announces itself unhealthy and leaves its queue groups for a
// time that grows with each ejection, as the ambassador's direct-mode
// ejection does, then comes back and is judged again.
//
// Stepping aside must not empty the service. The adapter watches its own
// service through discovery (Peers) and stays when another instance is
// not healthy to take its calls, or when its service already has its
// share of instances out. Without peers to ask it never steps aside.

// Peers is what the adapter knows of the other instances of its service.
// *discovery.Registry is one.
type Peers interface {
	Instances(service string) []discovery.Instance
}

// ejector is the adapter's self-ejection state.
type ejector struct {
	cfg         *config.Outlier // nil or Consecutive 0: off
	consecutive atomic.Int32
	busy        atomic.Bool // ejected, or deciding
	peers       atomic.Pointer[Peers]

	mu      sync.Mutex
	times   int           // ejections in a row, for the growing time out
	lastEnd time.Time     // when the last ejection ended
	stop    chan struct{} // closed at shutdown while out
}

// SetPeers gives the adapter what discovery knows of its service's
// instances, for the self-ejection guard. Until it is set, the adapter
// never takes itself out.
func (a *Adapter) SetPeers(p Peers) { a.eject.peers.Store(&p) }

// appFailed reports whether a served call's answer says the application
// failed, as outlier detection counts failures: a 5xx answer or the
// application unreachable (HTTP), or a server-side gRPC status. Calls the
// adapter refused itself (overloaded, denied) and calls that ended
// unanswered (the caller left, the deadline passed) are not the
// application's failures.
func appFailed(sc *serverCall) bool {
	if !sc.answered {
		return false
	}
	if sc.why != reason.None && sc.why != reason.AppUnreachable {
		return false
	}
	if sc.req.Protocol == envelope.ProtocolGRPC {
		switch sc.code {
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss:
			return true
		}
		return false
	}
	return sc.status >= http.StatusInternalServerError
}

// judge hears how a served call ended.
func (a *Adapter) judge(sc *serverCall) {
	e := &a.eject
	if e.cfg == nil || e.cfg.Consecutive == 0 {
		return
	}
	if !appFailed(sc) {
		if e.consecutive.Load() != 0 {
			e.consecutive.Store(0)
		}
		return
	}
	if e.consecutive.Add(1) >= int32(e.cfg.Consecutive) && e.busy.CompareAndSwap(false, true) {
		// Leaving the queue groups drains what the broker handed over:
		// not on the call's goroutine.
		go a.stepAside()
	}
}

// stepAside takes the adapter out of its service, if its peers allow,
// and watches over its time out.
func (a *Adapter) stepAside() {
	e := &a.eject
	m := a.metrics.Resilience
	// Instances of a service that fails as a whole reach their count
	// together; a moment's jitter lets the first one's announcement reach
	// the others before they decide.
	time.Sleep(rand.N(decideJitter))
	if why := a.mustStay(); why != "" {
		m.SelfEjections.WithLabelValues(a.cfg.Service, "kept").Inc()
		if ok, suppressed := a.limiter.Allow(); ok {
			a.logger.Warn("application answers keep failing; staying in the service", telemetry.KeyReason, why,
				"consecutive_failures", e.cfg.Consecutive, "suppressed", suppressed)
		}
		// Not judged again at once: while the whole service fails, every
		// few calls would ask again.
		time.Sleep(keptPause)
		e.consecutive.Store(0)
		e.busy.Store(false)
		return
	}
	e.mu.Lock()
	now := time.Now()
	if !e.lastEnd.IsZero() && now.Sub(e.lastEnd) > e.cfg.MaxEjection.D() {
		e.times = 0 // healthy for long enough: start over
	}
	e.times++
	d := min(e.cfg.BaseEjection.D()*time.Duration(e.times), e.cfg.MaxEjection.D())
	times := e.times
	stop := make(chan struct{})
	e.stop = stop
	e.mu.Unlock()

	if !a.setEjected(true) {
		e.busy.Store(false) // shutting down
		return
	}
	m.SelfEjections.WithLabelValues(a.cfg.Service, "ejected").Inc()
	m.SelfEjected.WithLabelValues(a.cfg.Service).Set(1)
	a.logger.Warn("application answers keep failing: leaving the service for a while", telemetry.KeyInstance, a.cfg.Instance,
		"for", d.String(), "ejections", times, "consecutive_failures", e.cfg.Consecutive)
	a.stayOut(d, stop)
}

// stayOut waits out an ejection of d, unless the adapter shuts down or
// its service turns out to have more instances out than its share: those
// that decided together settle it by name, the first ones by name staying
// out, and the rest coming back at once.
func (a *Adapter) stayOut(d time.Duration, stop <-chan struct{}) {
	end := time.NewTimer(d)
	defer end.Stop()
	review := time.NewTicker(reviewEvery)
	defer review.Stop()
	for {
		select {
		case <-stop:
			return
		case <-review.C:
			if !a.outranked() {
				continue
			}
			a.logger.Info("more instances out than the service's share: coming back early", telemetry.KeyInstance, a.cfg.Instance)
		case <-end.C:
		}
		a.stepBack()
		return
	}
}

// stepBack ends an ejection: the adapter takes calls again (if its health
// check lets it) and is judged afresh.
func (a *Adapter) stepBack() {
	e := &a.eject
	e.mu.Lock()
	e.lastEnd, e.stop = time.Now(), nil
	e.mu.Unlock()
	e.consecutive.Store(0)
	if a.setEjected(false) {
		a.metrics.Resilience.SelfEjected.WithLabelValues(a.cfg.Service).Set(0)
		a.logger.Info("ejection over: taking calls again", telemetry.KeyInstance, a.cfg.Instance)
	}
	e.busy.Store(false)
}

// Timings of self-ejection.
const (
	decideJitter = 100 * time.Millisecond // before deciding, at random up to this
	keptPause    = time.Second            // after deciding to stay, before judging again
	reviewEvery  = 250 * time.Millisecond // while out, how often the service's share is checked
)

// outranked reports whether the service has more instances out than its
// share and this one is not among the first by name of those out.
func (a *Adapter) outranked() bool {
	p := a.eject.peers.Load()
	if p == nil {
		return false
	}
	all := (*p).Instances(a.cfg.Service) // sorted by name
	allowed := a.allowedOut(len(all))
	rank := 0
	for _, in := range all {
		if in.Name == a.cfg.Instance {
			return rank >= allowed
		}
		if !in.Healthy {
			rank++
		}
	}
	return false
}

// allowedOut is how many of a service's n instances may be out at once.
func (a *Adapter) allowedOut(n int) int {
	allowed := n * a.eject.cfg.MaxEjectedPercent / 100
	if n >= 2 {
		allowed = max(allowed, 1) // at least one of two or more
	}
	return allowed
}

// mustStay says why the adapter may not step aside now, "" when it may:
// no peers known, no other healthy instance, or its service's share of
// instances out already.
func (a *Adapter) mustStay() string {
	p := a.eject.peers.Load()
	if p == nil {
		return "no discovery of the service's other instances"
	}
	all := (*p).Instances(a.cfg.Service)
	n, out, others := len(all), 0, 0
	for _, in := range all {
		switch {
		case !in.Healthy:
			out++
		case in.Name != a.cfg.Instance:
			others++
		}
	}
	if others == 0 {
		return "no other healthy instance"
	}
	if out >= a.allowedOut(n) {
		return "the service has its share of instances out"
	}
	return ""
}

// stopEjection ends a wait out, at shutdown.
func (a *Adapter) stopEjection() {
	e := &a.eject
	e.mu.Lock()
	if e.stop != nil {
		close(e.stop)
		e.stop = nil
	}
	e.mu.Unlock()
}

// servingGate is why the adapter takes calls or not: it serves while its
// application is healthy and it has not stepped aside. Changes are made
// one at a time, under mu, as leaving a queue group takes a while.
//
// serving is what the adapter does, not what it should: a join that fails
// (the broker is down) leaves it false, and it is not announced healthy,
// since no call would reach it. A rejoin then retries in the background
// (see rejoin) until it joins, the adapter should no longer serve, or it
// shuts down.
type servingGate struct {
	mu        sync.Mutex
	unhealthy bool
	ejected   bool
	closed    bool // shut down: nothing rejoins
	serving   bool // in the queue groups, announced healthy
	ctx       context.Context
	// stopRejoin ends the rejoin retrying in the background, and
	// rejoinDone is closed once it has ended; both nil while none runs.
	stopRejoin context.CancelFunc
	rejoinDone chan struct{}
}

// wanted reports whether the adapter should serve. s.mu is held.
func (s *servingGate) wanted() bool { return !s.unhealthy && !s.ejected }

// setHealthy follows the application's health check.
func (a *Adapter) setHealthy(healthy bool) {
	a.serveState(func(s *servingGate) { s.unhealthy = !healthy })
}

// setEjected steps the adapter aside or back; false when it is shut down.
func (a *Adapter) setEjected(ejected bool) bool {
	return a.serveState(func(s *servingGate) { s.ejected = ejected })
}

// serveState applies change and joins or leaves the service when whether
// it should serve differs from whether it does; false when the adapter is
// shut down. A join that fails is retried in the background.
func (a *Adapter) serveState(change func(*servingGate)) bool {
	s := &a.gate
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	change(s)
	switch want := s.wanted(); {
	case want == s.serving:
	case !want:
		_ = a.setServing(s.ctx, false) // leaving logs its own errors
		s.serving = false
	default:
		if err := a.setServing(s.ctx, true); err != nil {
			a.logger.Error("joining the queue group failed: retrying", telemetry.KeyErr, err)
			a.startRejoin()
			return true
		}
		s.serving = true
	}
	return true
}

// startRejoin starts retrying a failed join in the background, unless a
// retry runs already. s.mu is held.
func (a *Adapter) startRejoin() {
	s := &a.gate
	if s.stopRejoin != nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stopRejoin, s.rejoinDone = stop, done
	go func() {
		defer close(done)
		a.rejoin(ctx)
	}()
}

// closeServing stops every later join, at shutdown, and waits for a
// rejoin retrying in the background to end.
func (a *Adapter) closeServing() {
	s := &a.gate
	s.mu.Lock()
	s.closed = true
	stop, done := s.stopRejoin, s.rejoinDone
	s.stopRejoin, s.rejoinDone = nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	a.stopEjection()
}
