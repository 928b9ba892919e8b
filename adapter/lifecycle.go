package adapter

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Start subscribes to the adapter's inbox, the service's cancel subject and
// the instance's own subject (direct mode), checks the application if a
// health check is configured and, when it is healthy, joins the service's
// queue group (and its version's). It announces itself, healthy or not.
func (a *Adapter) Start(ctx context.Context) error {
	inbox, err := a.broker.Subscribe(ctx, a.inbox, a.handleFrame)
	if err != nil {
		return fmt.Errorf("adapter inbox: %w", err)
	}
	cancels, err := a.broker.Subscribe(ctx, a.subjects.Cancel(a.cfg.Service), a.handleFrame)
	if err != nil {
		inbox.Unsubscribe()
		return fmt.Errorf("adapter cancel subject: %w", err)
	}
	direct := a.subjects.Instance(a.cfg.Service, a.cfg.Instance)
	own, err := a.broker.Subscribe(ctx, direct, a.handleRequest)
	if err != nil {
		inbox.Unsubscribe()
		cancels.Unsubscribe()
		return fmt.Errorf("adapter subscribe %s: %w", direct, err)
	}
	l := &a.life
	l.mu.Lock()
	l.subs = []broker.Subscription{inbox, cancels}
	l.own = own
	l.started = true
	pctx, stopProbes := context.WithCancel(context.WithoutCancel(ctx))
	l.stopProbes, l.probesDone = stopProbes, make(chan struct{})
	l.mu.Unlock()
	go func() {
		defer close(l.probesDone)
		a.probeCallers(pctx)
	}()
	healthy := true
	if a.cfg.Health != nil {
		if err := a.checkApp(ctx); err != nil {
			healthy = false
			a.logger.Warn("application unhealthy at start: taking no calls until it passes", telemetry.KeyErr, err)
		}
	}
	a.gate.mu.Lock()
	a.gate.ctx, a.gate.unhealthy, a.gate.ejected, a.gate.closed = context.WithoutCancel(ctx), !healthy, false, false
	var joinErr error
	if healthy {
		joinErr = a.joinQueue(ctx)
	}
	a.gate.serving = healthy && joinErr == nil
	a.gate.mu.Unlock()
	if joinErr != nil {
		_ = a.Shutdown(context.Background()) // the start's error is the one to report
		return joinErr
	}
	if err := a.startServices(); err != nil {
		_ = a.Shutdown(context.Background()) // the start's error is the one to report
		return err
	}
	// Announce once calls can be taken, so no caller is sent here early.
	if err := a.announce.Start(ctx, healthy); err != nil {
		_ = a.Shutdown(context.Background()) // the start's error is the one to report
		return err
	}
	if a.cfg.Health != nil {
		hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		l.mu.Lock()
		l.stopHealth, l.healthDone = cancel, make(chan struct{})
		l.mu.Unlock()
		go func() {
			defer close(l.healthDone)
			a.watchHealth(hctx, healthy)
		}()
	}
	a.logger.Info("serving", telemetry.KeySubject, a.subjects.Service(a.cfg.Service), telemetry.KeyInstance, a.cfg.Instance,
		"target", a.cfg.Target, "healthy", healthy)
	return nil
}

// queueSubjects are the queue groups the adapter serves while healthy: the
// service's, and its version's (so callers can keep to a version in queue
// mode). Each group is named after its subject.
func (a *Adapter) queueSubjects() []string {
	s := []string{a.subjects.Service(a.cfg.Service)}
	if a.cfg.Version != "" {
		s = append(s, a.subjects.Version(a.cfg.Service, a.cfg.Version))
	}
	return s
}

// joinQueue joins the service's queue groups: calls start arriving.
func (a *Adapter) joinQueue(ctx context.Context) error {
	var subs []broker.Subscription
	for _, subject := range a.queueSubjects() {
		q, err := a.broker.QueueSubscribe(ctx, subject, subject, a.handleRequest)
		if err != nil {
			_ = leave(subs...) // the subscribe error is the one to report
			return fmt.Errorf("adapter subscribe %s: %w", subject, err)
		}
		subs = append(subs, q)
	}
	a.life.mu.Lock()
	a.life.queue = subs
	a.life.mu.Unlock()
	return nil
}

// drainTimeout bounds how long leaving a subscription may take to serve
// what the broker already handed over.
const drainTimeout = 10 * time.Second

// leave ends subscriptions, serving first what the broker already
// delivered to this instance; calls in flight go on.
func leave(subs ...broker.Subscription) error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	errs := make([]error, len(subs))
	var wg sync.WaitGroup
	for i, s := range subs {
		if s == nil {
			continue
		}
		wg.Go(func() {
			if d, ok := s.(broker.Drainer); ok {
				errs[i] = d.Drain(ctx)
			} else {
				errs[i] = s.Unsubscribe()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// leaveQueue leaves the service's queue groups.
func (a *Adapter) leaveQueue() error {
	a.life.mu.Lock()
	q := a.life.queue
	a.life.queue = nil
	a.life.mu.Unlock()
	return leave(q...)
}

// setServing joins or leaves the service (see servingGate). Leaving, the adapter
// says so, then leaves the queue groups; it keeps its instance subject, so
// a caller that chose it just before hearing still gets an answer.
// Healthy, it joins the queue groups, then says so; when the join fails it
// says nothing and returns the error, for its caller to retry. Leaving
// returns nil: it logs its errors, as there is nothing to retry.
func (a *Adapter) setServing(ctx context.Context, healthy bool) error {
	if !healthy {
		a.announce.SetHealthy(false)
		if err := a.leaveQueue(); err != nil {
			a.logger.Warn("leaving the queue group", telemetry.KeyErr, err)
		}
		return nil
	}
	if err := a.joinQueue(ctx); err != nil {
		return err
	}
	a.announce.SetHealthy(true)
	return nil
}

// Backoff of rejoin: the first wait, doubled after each failed attempt up
// to the last.
const (
	rejoinFirst = 100 * time.Millisecond
	rejoinMax   = 5 * time.Second
)

// rejoin retries joining the queue groups after a join failed (the broker
// was down), with backoff, until it joins, or the adapter should no longer
// serve (its application failed again, or it stepped aside), or ctx ends
// (shutdown). Each wait is jittered, so that instances cut off together do
// not all come back at the same moment.
func (a *Adapter) rejoin(ctx context.Context) {
	wait := rejoinFirst
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(wait/2 + rand.N(wait/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if a.tryRejoin(attempt) {
			return
		}
		wait = min(2*wait, rejoinMax)
	}
}

// tryRejoin makes one attempt at joining while the adapter should serve,
// and reports whether the retrying is over. It decides under the gate's
// lock, so a change of health cannot slip between its check and its join.
func (a *Adapter) tryRejoin(attempt int) bool {
	s := &a.gate
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return true // closeServing has taken the retry's handles
	}
	if s.wanted() && !s.serving {
		if err := a.setServing(s.ctx, true); err != nil {
			a.logger.Warn("rejoining the queue group", "attempt", attempt, telemetry.KeyErr, err)
			return false
		}
		s.serving = true
		a.logger.Info("rejoined the queue group", "attempts", attempt)
	}
	// Cleared under the lock: a join that fails from now on starts
	// another retry rather than counting on this one.
	s.stopRejoin()
	s.stopRejoin, s.rejoinDone = nil, nil
	return true
}

// shedDetail is what a call still waiting for a worker when Shutdown's
// time is up is answered (as overloaded, so its caller may try another
// instance).
const shedDetail = "the instance is shutting down"

// recancelEvery is how often cancelUntil cancels the calls again.
const recancelEvery = 10 * time.Millisecond

// cancelUntil cancels every call being served, again and again until done
// is closed: a worker that took a call just before the waiting line was
// shed registers it after the first cancel, and it must not run to its end.
func (a *Adapter) cancelUntil(done <-chan struct{}) {
	t := time.NewTicker(recancelEvery)
	defer t.Stop()
	for {
		a.calls.cancelAll()
		select {
		case <-done:
			return
		case <-t.C:
		}
	}
}

// leaveGrace is how long an adapter that said goodbye keeps taking calls:
// long enough for the goodbye to reach ambassadors, so a call sent just
// before is still served; longer on a broker that is broker.Latent.
const leaveGrace = 250 * time.Millisecond

// Shutdown drains: it says goodbye, keeps taking calls a moment for those
// sent before the goodbye arrived, leaves the queue groups and its instance
// subject, waits for the calls in flight to finish (until ctx ends, when it
// answers the calls still waiting for a worker at once and cancels those
// being served), then unsubscribes the rest.
func (a *Adapter) Shutdown(ctx context.Context) error {
	l := &a.life
	l.mu.Lock()
	started, subs, stopHealth, healthDone := l.started, l.subs, l.stopHealth, l.healthDone
	stopProbes, probesDone := l.stopProbes, l.probesDone
	l.started, l.subs, l.stopHealth, l.stopProbes = false, nil, nil, nil
	l.mu.Unlock()
	if !started {
		return nil
	}
	defer func() { stopProbes(); <-probesDone }()
	if stopHealth != nil {
		stopHealth()
		<-healthDone
	}
	a.closeServing() // nothing rejoins the queue groups from here
	var errs []error
	// Goodbye first: ambassadors stop choosing this instance before it
	// stops taking calls.
	errs = append(errs, a.announce.Stop(ctx))
	a.stopServices()
	t := time.NewTimer(max(leaveGrace, broker.DeliveryTime(a.broker)))
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	l.mu.Lock()
	own := l.own
	l.own = nil
	l.mu.Unlock()
	errs = append(errs, a.leaveQueue(), leave(own))
	// No call arrives any more: the workers end with their last one.
	a.pool.close()
	done := make(chan struct{})
	go func() { a.pool.wait(); a.streams.wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		// Out of time: the waiting line is answered at once rather than
		// served, and the calls being served are cancelled.
		a.pool.shed(shedDetail)
		a.cancelUntil(done)
		errs = append(errs, fmt.Errorf("drain: %w", ctx.Err()))
	}
	for _, s := range subs {
		errs = append(errs, s.Unsubscribe())
	}
	errs = append(errs, a.app.close())
	return errors.Join(errs...)
}
