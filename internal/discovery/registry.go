package discovery

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// Instance is what the registry knows of one instance of a service.
type Instance struct {
	Service     string
	Name        string
	Version     string
	Zone        string
	Labels      map[string]string
	Sidecar     string
	Healthy     bool
	Inflight    int
	Concurrency int
	P50         time.Duration // the application's median time, last interval
	LastSeen    time.Time
	TTL         time.Duration // forgotten when not heard from for this long

	seq uint64
}

// Registry is an ambassador's view of the mesh: the instances of every
// service, from their announcements, each forgotten after its TTL. Safe for
// concurrent use; the request path reads it without taking a write lock.
type Registry struct {
	now func() time.Time

	mu       sync.RWMutex
	services map[string]*service
}

// service is one service's instances, with a snapshot of the healthy ones
// that the request path loads without locking.
type service struct {
	instances map[string]*Instance
	healthy   atomic.Pointer[[]Instance] // sorted by name
}

// NewRegistry returns an empty Registry. now is the clock (time.Now when
// nil); tests inject their own.
func NewRegistry(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{now: now, services: map[string]*service{}}
}

// Apply records a hello or goodbye. It reports whether the set of healthy
// instances of the service changed.
func (r *Registry) Apply(a *busmeshv1.Announcement) bool {
	if a.GetService() == "" || a.GetInstance() == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.services[a.Service]
	switch a.Kind {
	case busmeshv1.Announcement_KIND_HELLO:
		if s == nil {
			s = &service{instances: map[string]*Instance{}}
			r.services[a.Service] = s
		}
		old := s.instances[a.Instance]
		if old != nil && a.Seq != 0 && a.Seq < old.seq && old.Sidecar == a.Sidecar {
			return false // stale: an older announcement overtaken by a newer one
		}
		inst := &Instance{
			Service:     a.Service,
			Name:        a.Instance,
			Version:     a.Version,
			Zone:        a.Zone,
			Labels:      maps.Clone(a.Labels),
			Sidecar:     a.Sidecar,
			Healthy:     a.Healthy,
			Inflight:    int(a.Inflight),
			Concurrency: int(a.Concurrency),
			P50:         time.Duration(a.P50Micros) * time.Microsecond,
			LastSeen:    r.now(),
			TTL:         3 * time.Duration(max(a.IntervalMs, 100)) * time.Millisecond,
			seq:         a.Seq,
		}
		s.instances[a.Instance] = inst
		changed := old == nil || old.Healthy != inst.Healthy || old.Version != inst.Version || old.Zone != inst.Zone
		// The snapshot carries readings (in-flight, p50) too: refresh it on
		// every hello, it is one small slice per interval per instance.
		r.snapshot(s)
		return changed
	case busmeshv1.Announcement_KIND_GOODBYE:
		if s == nil || s.instances[a.Instance] == nil {
			return false
		}
		if old := s.instances[a.Instance]; old.Sidecar != a.Sidecar && a.Sidecar != "" {
			return false // a goodbye from an instance of the same name elsewhere
		}
		delete(s.instances, a.Instance)
		r.snapshot(s)
		return true
	}
	return false
}

// Expire forgets instances not heard from within their TTL, and returns
// them.
func (r *Registry) Expire() []Instance {
	now := r.now()
	var gone []Instance
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, s := range r.services {
		changed := false
		for n, inst := range s.instances {
			if now.Sub(inst.LastSeen) > inst.TTL {
				gone = append(gone, *inst)
				delete(s.instances, n)
				changed = true
			}
		}
		if changed {
			r.snapshot(s)
		}
		if len(s.instances) == 0 {
			delete(r.services, name)
		}
	}
	return gone
}

// snapshot rebuilds s's healthy list; r.mu is held.
func (r *Registry) snapshot(s *service) {
	healthy := make([]Instance, 0, len(s.instances))
	for _, inst := range s.instances {
		if inst.Healthy {
			healthy = append(healthy, *inst)
		}
	}
	slices.SortFunc(healthy, func(a, b Instance) int { return cmp.Compare(a.Name, b.Name) })
	s.healthy.Store(&healthy)
}

// Healthy returns the healthy instances of a service, sorted by name. The
// slice is shared: callers must not modify it.
func (r *Registry) Healthy(name string) []Instance {
	r.mu.RLock()
	s := r.services[name]
	r.mu.RUnlock()
	if s == nil {
		return nil
	}
	return *s.healthy.Load()
}

// Instances returns every known instance of a service, healthy or not,
// sorted by name.
func (r *Registry) Instances(name string) []Instance {
	r.mu.RLock()
	defer r.mu.RUnlock()
	s := r.services[name]
	if s == nil {
		return nil
	}
	out := make([]Instance, 0, len(s.instances))
	for _, inst := range s.instances {
		out = append(out, *inst)
	}
	slices.SortFunc(out, func(a, b Instance) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Services returns the names of the services with known instances, sorted.
func (r *Registry) Services() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.services))
}
