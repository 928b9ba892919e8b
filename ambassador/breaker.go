package ambassador

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// The states of a breaker.
const (
	breakerClosed int32 = iota
	breakerOpen
	breakerHalfOpen
)

// maxOpenDoublings bounds how long a breaker that keeps failing its
// probes stays open: OpenFor × 2⁶ at most.
const maxOpenDoublings = 6

// breaker is a circuit breaker (see config.Breaker): closed, it counts
// failures; open, it refuses calls until its time is up; half-open, it
// lets a few probes through and closes when they succeed, or opens again,
// for twice as long, when one fails. The closed path is atomic
// operations only; changes of state take the lock.
type breaker struct {
	state       atomic.Int32
	consecutive atomic.Int64
	openUntil   atomic.Int64 // unix nanoseconds
	probes      atomic.Int32 // half-open probes left to admit
	probesOK    atomic.Int32 // half-open probes that succeeded

	mu       sync.Mutex
	window   *counterRing // calls, failures; made on first need
	openings int          // openings in a row, for the doubling
}

// allows reports whether a call may go now, without taking a probe:
// the picker asks it of every candidate.
func (b *breaker) allows(now int64) bool {
	switch b.state.Load() {
	case breakerOpen:
		return now >= b.openUntil.Load()
	case breakerHalfOpen:
		return b.probes.Load() > 0
	}
	return true
}

// admit lets a call through, taking a probe when the breaker is (or
// turns) half-open. It reports whether the call is a probe, and when it
// is refused, how long until the breaker may let calls through.
func (b *breaker) admit(now int64) (ok, probe bool, wait time.Duration) {
	switch b.state.Load() {
	case breakerClosed:
		return true, false, 0
	case breakerOpen:
		until := b.openUntil.Load()
		if now < until {
			return false, false, time.Duration(until - now)
		}
		b.mu.Lock()
		if b.state.Load() == breakerOpen {
			b.state.Store(breakerHalfOpen)
		}
		b.mu.Unlock()
	}
	if b.probes.Add(-1) >= 0 {
		return true, true, 0
	}
	b.probes.Add(1)
	return false, false, time.Second
}

// record counts how an admitted call went, and trips or closes the
// breaker. It reports the state it changed to, or -1.
func (b *breaker) record(cfg *config.Breaker, now int64, failed, probe bool) int32 {
	if probe || b.state.Load() == breakerHalfOpen {
		if !probe {
			return -1 // admitted before the breaker opened: its news is old
		}
		if failed {
			return b.open(cfg, now)
		}
		if b.probesOK.Add(1) >= int32(cfg.HalfOpenProbes) {
			return b.close()
		}
		return -1
	}
	if b.state.Load() != breakerClosed {
		return -1
	}
	if !failed {
		if b.consecutive.Load() != 0 {
			b.consecutive.Store(0)
		}
		if cfg.FailurePercent > 0 {
			b.ring(cfg).add(now, 1, 0)
		}
		return -1
	}
	n := b.consecutive.Add(1)
	if cfg.ConsecutiveFailures > 0 && n >= int64(cfg.ConsecutiveFailures) {
		return b.open(cfg, now)
	}
	if cfg.FailurePercent > 0 {
		r := b.ring(cfg)
		r.add(now, 1, 1)
		calls, fails := r.sum(now)
		if calls >= int64(cfg.MinCalls) && fails*100 >= int64(cfg.FailurePercent)*calls {
			return b.open(cfg, now)
		}
	}
	return -1
}

func (b *breaker) ring(cfg *config.Breaker) *counterRing {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.window == nil {
		b.window = newCounterRing(cfg.Window.D())
	}
	return b.window
}

// open opens the breaker for OpenFor, doubled for each opening in a row.
func (b *breaker) open(cfg *config.Breaker, now int64) int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() == breakerOpen {
		return -1
	}
	d := cfg.OpenFor.D() << min(b.openings, maxOpenDoublings)
	b.openings++
	b.openUntil.Store(now + int64(d))
	b.probes.Store(int32(cfg.HalfOpenProbes))
	b.probesOK.Store(0)
	b.state.Store(breakerOpen)
	return breakerOpen
}

func (b *breaker) close() int32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state.Load() == breakerClosed {
		return -1
	}
	b.openings = 0
	b.consecutive.Store(0)
	b.window = nil
	b.state.Store(breakerClosed)
	return breakerClosed
}

// serviceState is what the ambassador keeps of a service: its breaker and
// capacity count, kept across reloads (serviceShared), and its retry
// budget and call limits, made for the policy in force. A reload that
// changes the limits or the budget puts a new state in the map; calls
// holding slots of the old one release them there.
type serviceState struct {
	*serviceShared
	made    stateLimits // what budget, slots and pending were made for
	budget  *retryBudget
	slots   chan struct{} // max_concurrent; nil when unbounded
	pending *atomic.Int64 // calls waiting for a slot, shared with slots
}

// serviceShared is the part of a service's state that reloads keep.
type serviceShared struct {
	brk breaker
	// inflight and room are withinCapacity's: this ambassador's calls in
	// flight, and what the instances announce they can take.
	inflight atomic.Int64
	room     room
}

// stateLimits are the parameters of a policy that a service's state is
// made from.
type stateLimits struct {
	maxConcurrent, maxPending      int
	budgetPercent, budgetPerSecond int
}

func limitsOf(p *config.ServicePolicy) stateLimits {
	var l stateLimits
	if b := p.Breaker; b != nil {
		l.maxConcurrent, l.maxPending = b.MaxConcurrent, b.MaxPending
	}
	if r := p.Retry; r != nil {
		l.budgetPercent, l.budgetPerSecond = r.Budget.Percent, r.Budget.MinPerSecond
	}
	return l
}

// serviceOf returns the state of c's service on c's broker. A service
// split over brokers has a state on each: a new broker failing opens its
// own breaker and spends its own retry budget, and the calls on the
// primary go on. While the call's policy is the one the state was made
// for, that is a map lookup.
func (a *Ambassador) serviceOf(c *Call) *serviceState {
	rt, key := c.Route, c.Route.Service
	if c.lane != nil && c.lane != a.primary {
		key += "@" + c.lane.name
	}
	v, ok := a.services.Load(key)
	if ok {
		if s := v.(*serviceState); s.made == limitsOf(&rt.Policy) {
			return s
		}
	}
	return a.remakeService(key, rt, v)
}

// remakeService makes the state of rt's service (at key) for the limits
// of the routing table in force, when the state in the map, old (nil:
// none), has other limits. They are the table's, not rt's: a call whose
// route is older than the last reload must not take the state back to
// the limits of its own.
func (a *Ambassador) remakeService(key string, rt *Route, old any) *serviceState {
	for {
		want := limitsOf(&rt.Policy)
		if t := a.table.Load(); t != nil { // nil: an Ambassador a test made bare
			p := t.cfg.Policy(rt.Service)
			want = limitsOf(&p)
		}
		var s *serviceState
		if old != nil {
			if s = old.(*serviceState); s.made == want {
				return s
			}
		}
		n := newServiceState(s, want)
		if old == nil {
			if v, loaded := a.services.LoadOrStore(key, n); loaded {
				old = v
				continue
			}
			return n
		}
		if a.services.CompareAndSwap(key, old, n) {
			return n
		}
		old, _ = a.services.Load(key)
	}
}

// newServiceState makes a state with limits l, keeping what it can of
// prev (nil for none): its breaker and capacity count always, its budget
// and slots when their limits are unchanged.
func newServiceState(prev *serviceState, l stateLimits) *serviceState {
	s := &serviceState{made: l}
	if prev != nil {
		s.serviceShared = prev.serviceShared
		if prev.made.budgetPercent == l.budgetPercent && prev.made.budgetPerSecond == l.budgetPerSecond {
			s.budget = prev.budget
		}
		if prev.made.maxConcurrent == l.maxConcurrent {
			s.slots, s.pending = prev.slots, prev.pending
		}
	} else {
		s.serviceShared = &serviceShared{}
	}
	if s.budget == nil {
		s.budget = newRetryBudget(l.budgetPercent, l.budgetPerSecond)
	}
	if s.pending == nil {
		s.pending = new(atomic.Int64)
		if l.maxConcurrent > 0 {
			s.slots = make(chan struct{}, l.maxConcurrent)
		}
	}
	return s
}

// breaking is the service's circuit breaker and call limits: a call is
// answered at once with circuit-open while the breaker is open, and with
// overloaded when max_concurrent calls are in flight and max_pending wait
// already. A call whose answer streams is judged when its head comes,
// with the head's status: a probe that turns into a watch or a long
// download would otherwise hold the breaker half-open, refusing every
// other call, for as long as it lasts, and a stream that worked would
// count as failed when its caller's deadline ended it.
func (a *Ambassador) breaking(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		cfg := c.Route.Policy.Breaker
		if cfg == nil {
			return next(ctx, c)
		}
		s := a.serviceOf(c)
		if slots := s.slots; slots != nil {
			if err := a.takeSlot(ctx, c, s); err != nil {
				return err
			}
			c.OnEnd(func(*Outcome) { <-slots })
		}
		if cfg.ConsecutiveFailures == 0 && cfg.FailurePercent == 0 {
			return next(ctx, c)
		}
		ok, probe, wait := s.brk.admit(time.Now().UnixNano())
		if !ok {
			a.metrics.Resilience.BreakerRefused.WithLabelValues(c.Route.Service, reason.CircuitOpen.String()).Inc()
			e := reason.Errorf(reason.CircuitOpen, "the circuit of service %q is open%s", c.Route.Service, a.onLane(c))
			e.RetryAfter = wait
			return e
		}
		service := c.Route.Service
		err := next(ctx, c)
		if resp := c.Answer(); err == nil && resp.More && resp.Error == "" {
			a.judge(s, cfg, service, failedAnswer(resp), probe)
			return nil
		}
		c.OnEnd(func(o *Outcome) {
			if o.Reason == reason.Cancelled {
				if probe {
					s.brk.probes.Add(1) // the probe told nothing: another may go
				}
				return
			}
			a.judge(s, cfg, service, failedOutcome(o), probe)
		})
		return err
	}
}

// judge records how an admitted call went in its service's breaker.
func (a *Ambassador) judge(s *serviceState, cfg *config.Breaker, service string, failed, probe bool) {
	if st := s.brk.record(cfg, time.Now().UnixNano(), failed, probe); st >= 0 {
		breakerChanged(a.logger, a.metrics.Resilience, service, "", st)
	}
}

// takeSlot waits for one of the service's max_concurrent slots while
// fewer than max_pending calls wait; a call beyond is refused at once.
// The limits are the state's own, those its slots were made for.
func (a *Ambassador) takeSlot(ctx context.Context, c *Call, s *serviceState) error {
	select {
	case s.slots <- struct{}{}:
		return nil
	default:
	}
	if s.pending.Add(1) > int64(s.made.maxPending) {
		s.pending.Add(-1)
		a.metrics.Resilience.BreakerRefused.WithLabelValues(c.Route.Service, reason.Overloaded.String()).Inc()
		e := reason.Errorf(reason.Overloaded, "service %q has %d calls in flight and %d waiting (max_concurrent, max_pending)",
			c.Route.Service, s.made.maxConcurrent, s.made.maxPending)
		e.RetryAfter = time.Second
		return e
	}
	defer s.pending.Add(-1)
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			return reason.Errorf(reason.Timeout, "no call slot of service %q freed before the deadline", c.Route.Service)
		}
		// The wait for the answer's head (a call without a deadline), the
		// idle timeout, or the caller gone.
		return ended(ctx, c)
	}
}

// failedOutcome reports whether a call's outcome counts as a failure of
// the service: a 5xx answer, a gateway error, a timeout, or a gRPC status
// that says the server failed.
func failedOutcome(o *Outcome) bool {
	switch o.Reason {
	case reason.None:
	case reason.Timeout, reason.NoResponders, reason.BrokerUnavailable, reason.AppUnreachable,
		reason.StreamFailed, reason.Overloaded, reason.Unknown:
		return true
	default:
		return false
	}
	if o.GRPC {
		return grpcFailure(o.Code)
	}
	return o.Status >= 500
}

// breakerChanged logs and shows a breaker's new state; instance is ""
// for the service's own.
func breakerChanged(logger *slog.Logger, m *telemetry.Resilience, service, instance string, state int32) {
	if m != nil {
		m.BreakerState.WithLabelValues(service, instance).Set(float64(state))
	}
	logger.Info("circuit breaker "+breakerStateName(state), "service", service, "instance", instance)
}

func breakerStateName(s int32) string {
	switch s {
	case breakerOpen:
		return "opened"
	case breakerHalfOpen:
		return "half-open"
	case breakerClosed:
		return "closed"
	}
	return strconv.Itoa(int(s))
}
