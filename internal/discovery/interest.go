package discovery

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Watching reports whether the registry watches service. It takes no lock.
func (r *Registry) Watching(service string) bool {
	return (*r.services.Load())[service] != nil
}

// Watched returns the services the registry watches, sorted: those the
// routing table names (Route) and those calls asked for (Healthy, Learn).
func (r *Registry) Watched() []string {
	return slices.Sorted(maps.Keys(*r.services.Load()))
}

// ensure watches service, within the bound, and returns it; nil when the
// name is no subject token or the bound is reached.
func (r *Registry) ensure(name string) *service {
	if s := (*r.services.Load())[name]; s != nil {
		return s
	}
	if broker.ValidToken(name) != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ensureLocked(name, false)
}

// ensureLocked is ensure with r.mu held; a service the routing table
// names (routed) is watched whatever the bound, which is for the services
// calls ask for.
func (r *Registry) ensureLocked(name string, routed bool) *service {
	old := *r.services.Load()
	if s := old[name]; s != nil {
		return s
	}
	forget := ""
	if !routed && asked(old) >= r.maxServices {
		if forget = forgettable(old, r.since(r.now())); forget == "" {
			r.rejected.serviceLimit.Inc()
			r.logger.Debug("service not watched: at the bound", telemetry.KeyService, name, "max", r.maxServices)
			return nil
		}
	}
	s := &service{name: name, entries: map[string]*entry{}, answered: make(chan struct{}), heard: make(chan struct{})}
	s.healthy.Store(&[]Instance{})
	m := maps.Clone(old)
	delete(m, forget)
	m[name] = s
	r.services.Store(&m)
	r.signal()
	return s
}

// signal tells the Watcher the set of services changed.
func (r *Registry) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Route sets the services the routing table names: each is watched (they
// come before any asked for by calls), and those the previous table named
// and this one does not are dropped. The ambassador calls it at start and
// on every reload.
func (r *Registry) Route(services []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	keep := map[string]bool{}
	for _, name := range services {
		if broker.ValidToken(name) != nil {
			continue
		}
		keep[name] = true
		if s := r.ensureLocked(name, true); s != nil {
			s.routed.Store(true)
		}
	}
	old := *r.services.Load()
	var m map[string]*service
	for name, s := range old {
		if s.routed.Load() && !keep[name] {
			if m == nil {
				m = maps.Clone(old)
			}
			delete(m, name)
			for _, e := range s.sorted {
				r.wheel.remove(e)
			}
		}
	}
	if m != nil {
		r.services.Store(&m)
		r.signal()
	}
}

// Learn makes sure service is watched and, if its instances were never
// asked for yet, waits for the first answer, at most wait (or until ctx
// ends). It reports whether it waited: a caller that found no healthy
// instance should look again. A service already answered returns at once.
func (r *Registry) Learn(ctx context.Context, service string, wait time.Duration) bool {
	s := r.ensure(service)
	if s == nil {
		return false
	}
	select {
	case <-s.answered:
		return false
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.answered:
	case <-t.C:
	case <-ctx.Done():
	}
	return true
}

// AwaitFirst waits, while a service the routing table names never had a
// healthy instance at version ("" for any) and is within its first
// hearing (until one announcement interval after its first ping
// settled), for the first such instance, or until ctx ends. It reports
// whether it waited: a caller that found no healthy instance should look
// again.
//
// Why: the answers to the ping sent when a sidecar starts can come after
// the ping settles (a Kafka consumer still joining, a busy machine), and
// one version's answer can come before another's, but every live adapter
// announces once an interval on the subject the watcher subscribed to
// before pinging, so until then "none answered" does not yet mean "none
// is there": a canary's first calls go to the canary, not to the
// fallback. A name no route gives is not awaited: a call to a service
// nobody serves is answered at once.
func (r *Registry) AwaitFirst(ctx context.Context, service, version string) bool {
	s := (*r.services.Load())[service]
	if s == nil || !s.routed.Load() {
		return false
	}
	// The hearing ends an interval after the first ping settled; until it
	// settles (it may not even be sent yet), it is at least that far off.
	hearingLeft := func() time.Duration { return s.settledAt + r.interval - r.since(r.now()) }
	if r.hearingOver(s, r.since(r.now())) {
		return false // no lock taken
	}
	answered := s.answered
	select {
	case <-answered: // settledAt is set
		answered = nil
	default:
	}
	var t *time.Timer
	for waited := false; ; waited = true {
		r.mu.Lock()
		_, seen := s.seen[version]
		heard := s.heard
		r.mu.Unlock()
		if seen {
			return waited
		}
		if t == nil { // not before it is needed: most calls find the version seen
			left := r.interval + askSettle
			if answered == nil {
				left = hearingLeft()
			}
			t = time.NewTimer(left)
			defer t.Stop()
		}
		select {
		case <-heard:
		case <-answered:
			answered = nil
			t.Reset(hearingLeft())
		case <-t.C:
			return true
		case <-ctx.Done():
			return true
		}
	}
}

// hearingOver reports whether s's first hearing had ended at at: its
// first ping settled and an announcement interval has passed since.
func (r *Registry) hearingOver(s *service, at time.Duration) bool {
	select {
	case <-s.answered: // settledAt is set
		return at >= s.settledAt+r.interval
	default:
		return false
	}
}

// answer marks service's first ping answered (or settled unanswered),
// publishing what is known of it first, so a caller waiting in Learn finds
// it.
func (r *Registry) answer(service string) {
	s := (*r.services.Load())[service]
	if s == nil {
		return
	}
	select {
	case <-s.answered:
		return
	default:
	}
	s.answeredOnce.Do(func() {
		r.mu.Lock()
		s.settledAt = r.since(r.now())
		r.publish(s, s.settledAt)
		r.mu.Unlock()
		close(s.answered)
	})
}

// forgetAfter is how long a service asked for that nobody serves keeps
// its place at the bound of services watched.
const forgetAfter = time.Minute

// forgettable returns a service watched because a call asked for it that
// nobody serves (no instance known, its ask settled and its last instance
// gone at least forgetAfter before at), or "" if there is none: at the
// bound, a new service takes
// its place. Else names that no service has (made-up hosts, or external
// ones through the ambassador as HTTP_PROXY) would fill the bound for
// good, and a real service first asked for after them could never be
// learnt. A flood of new names still finds the bound full of recent ones
// and is refused at once, not asked for one by one. Called with r.mu
// held.
func forgettable(services map[string]*service, at time.Duration) string {
	for name, s := range services {
		if s.routed.Load() || len(s.entries) > 0 {
			continue
		}
		select {
		case <-s.answered: // settledAt is set
			if at-max(s.settledAt, s.lastServed) >= forgetAfter {
				return name
			}
		default: // its ask is still out: a call may be waiting on it
		}
	}
	return ""
}

// asked counts the services watched because calls asked for them.
func asked(services map[string]*service) int {
	n := 0
	for _, s := range services {
		if !s.routed.Load() {
			n++
		}
	}
	return n
}
