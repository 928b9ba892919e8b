package discovery

import (
	"cmp"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
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
	// ServiceTime is how long a call holds one of the instance's
	// Concurrency slots, as its adapter estimates; 0 before its first call.
	ServiceTime time.Duration
	// NoServiceTime: the adapter does not announce its service time (a
	// version before it did), so callers do not size what they send it.
	NoServiceTime bool
	LastSeen      time.Time
	TTL           time.Duration // forgotten when not heard from for this long
	// Conflict names another live sidecar ("sidecar/incarnation") that
	// claims the same instance id; "" when none.
	Conflict string
}

// Limits and timings of a Registry.
const (
	// DefaultMaxInstances bounds the instances of one service a registry
	// keeps; announcements of more are dropped and counted.
	DefaultMaxInstances = 10_000
	// DefaultMaxServices bounds the services a registry watches because
	// calls asked for them; an ask for more takes the place of one nobody
	// has served for a minute (forgetAfter), or else is refused and
	// counted.
	DefaultMaxServices = 1024
	// DefaultInterval is the announcement interval assumed when Options
	// name none (config discovery.interval).
	DefaultInterval = 2 * time.Second

	// ttlIntervals is an instance's lifetime in announcement intervals.
	ttlIntervals = 3
	// maxIntervalFactor caps the interval an announcement may claim, as a
	// multiple of the registry's own: a lifetime never exceeds
	// ttlIntervals × maxIntervalFactor × Interval, whatever a message says.
	maxIntervalFactor = 2
	// minInterval is the shortest interval an announcement may claim.
	minInterval = 100 * time.Millisecond
	// snapshotEvery is the most often a service's snapshot is rebuilt
	// from the announcements the Watcher hears, plus snapshotPerInstance
	// for each of its instances (a rebuild copies them all): a storm costs
	// a service of 100 instances at most one rebuild per 2.1ms, one of
	// 5,000 one per 7ms.
	snapshotEvery       = 2 * time.Millisecond
	snapshotPerInstance = time.Microsecond
	// suspectFirst and suspectMax bound how long an instance the broker
	// found nobody behind (Suspect) is left out: the first time, then
	// twice as long each time again, up to suspectMax.
	suspectFirst = time.Second
	suspectMax   = time.Minute
)

// Options configure a Registry.
type Options struct {
	// Now is the clock (time.Now when nil); tests inject their own.
	Now func() time.Time
	// Interval is the mesh's announcement interval (DefaultInterval when
	// zero). It caps the lifetime an announcement can claim.
	Interval time.Duration
	// MaxInstances bounds the instances kept per service
	// (DefaultMaxInstances when zero).
	MaxInstances int
	// MaxServices bounds the services watched (DefaultMaxServices when
	// zero).
	MaxServices int
	// Metrics count what the registry refuses in
	// busmesh_envelopes_rejected_total{component="discovery"}; nil counts
	// nowhere.
	Metrics *telemetry.Metrics
	// Logger reports conflicts and refusals; nil discards.
	Logger *slog.Logger
}

// Registry is an ambassador's view of the services it uses: their
// instances, from their own announcements, each forgotten after its
// lifetime. An entry belongs to the sidecar and incarnation that created
// it; what anyone else says about it is ignored and counted. Safe for
// concurrent use; the request path (Healthy) takes no lock and allocates
// nothing.
//
// Cost per announcement does not grow with the service: an entry is
// updated in place, a service's snapshot of healthy instances is rebuilt
// (copy-on-write) only when its membership or health changed, at most every
// few milliseconds, and expiry walks a timing wheel.
type Registry struct {
	now          func() time.Time
	epoch        time.Time
	interval     time.Duration
	maxInstances int
	maxServices  int
	logger       *slog.Logger
	rejected     rejections

	// services is the services watched, replaced whole (under mu) when one
	// is added or dropped, so readers load it without locking.
	services atomic.Pointer[map[string]*service]
	// asks carries services a reader asked for that are not watched yet, to
	// the Watcher; changed tells it the set of services changed.
	asks    chan string
	changed chan struct{}
	verify  chan verification

	mu         sync.Mutex
	wheel      wheel
	dirty      []*service
	flushArmed bool
	flushTimer *time.Timer
	reviews    []review
	tombs      tombstones
}

// service is one watched service: its instances by name and in name
// order, and a snapshot of the healthy ones that the request path loads
// without locking.
type service struct {
	name    string
	entries map[string]*entry
	sorted  []*entry
	healthy atomic.Pointer[[]Instance] // sorted by name; shared, read-only
	dirty   bool
	built   time.Time   // when the Watcher's path last rebuilt the snapshot
	routed  atomic.Bool // named by the routing table (Route)
	// answered is closed when the first answer to the service's ping came
	// in, or the ping settled unanswered.
	answered     chan struct{}
	answeredOnce sync.Once
	pinged       atomic.Bool // the Watcher asked this entry's instances
	// settledAt is when the first ping settled (set under mu before
	// answered is closed). Under mu, for a routed service within its
	// first hearing: seen holds each version a snapshot held a healthy
	// instance of ("" for any), and heard is closed (and replaced) when a
	// snapshot holds a version first; both serve AwaitFirst.
	settledAt time.Duration
	// lastServed is when its last instance left (under mu; 0 if none
	// ever did): a service between a restart's goodbye and hello is not
	// one nobody serves (forgettable).
	lastServed time.Duration
	seen       map[string]struct{}
	heard      chan struct{}
}

// owner is who may speak for an entry: the sidecar and incarnation that
// created it.
type owner struct{ sidecar, incarnation string }

func (o owner) String() string {
	if o.incarnation == "" {
		return o.sidecar
	}
	return o.sidecar + "/" + o.incarnation
}

// entry is one instance in the registry.
type entry struct {
	inst Instance
	// shownConcurrency and shownServiceTime are inst's as the service's
	// snapshot last copied them: new readings are compared with what
	// callers see (capacityMoved).
	shownConcurrency int
	shownServiceTime time.Duration
	owner            owner
	seq              uint64
	deadline         time.Duration // end of life, since the registry's epoch

	// The expiry wheel's links.
	slot       int64
	prev, next *entry
	linked     bool

	// rival is another sender claiming the instance: heard at rivalSeen,
	// with what it last said. ownerSpoke tells whether the owner spoke
	// since the rival first did: then both are alive, a conflict.
	rival        owner
	rivalSeen    time.Duration
	rivalTTL     time.Duration
	rivalSeq     uint64
	rivalHealthy bool
	ownerSpoke   bool

	// suspectUntil keeps the instance out of the snapshot after the broker
	// found nobody behind it; suspectFor is how long the last time was.
	suspectUntil time.Duration
	suspectFor   time.Duration

	// verified tells that the owner answered a ping of this registry's
	// Watcher; verifyAsked is when the Watcher was last asked to check.
	verified    bool
	verifyAsked time.Duration
}

// verification is an instance whose owner the Watcher should ask about.
type verification struct{ service, instance string }

// NewRegistry returns an empty Registry with default limits. now is the
// clock (time.Now when nil).
func NewRegistry(now func() time.Time) *Registry { return NewRegistryWith(Options{Now: now}) }

// NewRegistryWith returns an empty Registry configured by o.
func NewRegistryWith(o Options) *Registry {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MaxInstances <= 0 {
		o.MaxInstances = DefaultMaxInstances
	}
	if o.MaxServices <= 0 {
		o.MaxServices = DefaultMaxServices
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		now: o.Now, epoch: o.Now(), interval: o.Interval,
		maxInstances: o.MaxInstances, maxServices: o.MaxServices,
		logger:   o.Logger.With(telemetry.KeyComponent, "discovery"),
		rejected: newRejections(o.Metrics),
		asks:     make(chan string, 64),
		verify:   make(chan verification, 64),
		changed:  make(chan struct{}, 1),
	}
	r.tombs = newTombstones(r.maxInstances)
	r.wheel = newWheel(r.maxTTL())
	r.wheel.swept = int64(r.since(r.epoch) / wheelSlot)
	r.services.Store(&map[string]*service{})
	r.flushTimer = time.AfterFunc(time.Hour, r.flush)
	r.flushTimer.Stop()
	return r
}

// maxTTL is the longest lifetime an entry can have.
func (r *Registry) maxTTL() time.Duration { return ttlIntervals * maxIntervalFactor * r.interval }

// ttl is the lifetime an announcement earns: three of its intervals,
// within bounds whatever it claims.
func (r *Registry) ttl(a *busmeshv1.Announcement) time.Duration {
	claimed := time.Duration(a.GetIntervalMs()) * time.Millisecond
	return ttlIntervals * min(max(claimed, minInterval), maxIntervalFactor*r.interval)
}

// since is t on the registry's monotonic time line.
func (r *Registry) since(t time.Time) time.Duration { return t.Sub(r.epoch) }

// Apply records a hello or goodbye heard from anyone, watching its
// service if it is not yet watched, and publishes the change at once. It
// reports whether the set of healthy instances of the service changed.
// The Watcher uses the coalescing path instead.
func (r *Registry) Apply(a *busmeshv1.Announcement) bool {
	if !r.valid(a) || r.ensure(a.GetService()) == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := r.applyLocked(a, false)
	r.flushLocked()
	return changed
}

// update is Apply for the Watcher: an announcement for a service not
// watched is dropped, and the snapshot is rebuilt at most every
// snapshotEvery. answer tells that a came to the Watcher's own inbox, in
// answer to its ping: its sender answers pings, as a live adapter does.
func (r *Registry) update(a *busmeshv1.Announcement, answer bool) bool {
	if !r.valid(a) {
		return false
	}
	if !r.Watching(a.Service) {
		r.rejected.unwanted.Inc()
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := r.applyLocked(a, answer)
	if len(r.dirty) > 0 && !r.flushArmed {
		r.flushArmed = true
		r.flushTimer.Reset(snapshotEvery)
	}
	return changed
}

// valid checks what an announcement's names become: subjects.
func (r *Registry) valid(a *busmeshv1.Announcement) bool {
	if broker.ValidToken(a.GetService()) != nil || broker.ValidToken(a.GetInstance()) != nil {
		r.rejected.malformed.Inc()
		return false
	}
	return true
}

// applyLocked applies a; r.mu is held and a's service is watched. An
// answer to the Watcher's ping proves its sender alive and answering: it
// takes over an entry whose owner never answered (one who spoke first
// without being a live adapter cannot keep the instance).
func (r *Registry) applyLocked(a *busmeshv1.Announcement, answer bool) bool {
	s := (*r.services.Load())[a.Service]
	if s == nil {
		return false // dropped since
	}
	from := owner{a.Sidecar, a.Incarnation}
	now := r.now()
	at := r.since(now)
	e := s.entries[a.Instance]
	switch a.Kind {
	case busmeshv1.Announcement_KIND_HELLO:
		// A replay of an owner that left (its goodbye or expiry overtook
		// it) finds no entry of its own to be older than: the tombstone
		// is. The owner's heartbeats, the common case, skip the lookup.
		if (e == nil || e.owner != from) && r.tombs.buried(tombKey{a.Service, a.Instance, from}, a.Seq, at) {
			return false
		}
		if e == nil {
			changed := r.add(s, a, from, now)
			if e = s.entries[a.Instance]; e != nil {
				e.verified = answer
			}
			return changed
		}
		if e.owner != from && answer && !e.verified {
			r.takeOver(e, from)
		}
		if e.owner != from {
			r.heardRival(e, from, a, at)
			return false
		}
		if a.Seq != 0 && a.Seq < e.seq {
			return false // stale: overtaken by a newer one
		}
		e.verified = e.verified || answer
		r.heardOwner(e, at)
		return r.refresh(s, e, a, now)
	case busmeshv1.Announcement_KIND_GOODBYE:
		if e == nil {
			return false
		}
		if e.owner != from {
			r.rejected.foreign.Inc()
			if e.rival == from {
				e.rival = owner{} // the rival left
				e.inst.Conflict = ""
			}
			return false
		}
		e.seq = max(e.seq, a.Seq) // the owner's last word, for its tombstone
		return r.leave(s, e, at)
	}
	return false
}

// takeOver gives e to from, who answered the Watcher's ping, and keeps
// the owner that never did as its rival (a conflict while it still
// speaks). What the old owner said is ignored from now on and counted.
func (r *Registry) takeOver(e *entry, from owner) {
	r.rejected.foreign.Inc()
	e.rival, e.rivalSeen, e.rivalTTL = e.owner, r.since(e.inst.LastSeen), e.inst.TTL
	e.rivalSeq, e.rivalHealthy = e.seq, e.inst.Healthy
	e.owner, e.seq, e.inst.Sidecar, e.inst.Conflict, e.ownerSpoke = from, 0, from.sidecar, "", false
}

// add creates the entry of a new instance, within the service's bound.
func (r *Registry) add(s *service, a *busmeshv1.Announcement, from owner, now time.Time) bool {
	if len(s.entries) >= r.maxInstances {
		r.rejected.instanceLimit.Inc()
		return false
	}
	e := &entry{owner: from, seq: a.Seq, inst: Instance{Service: a.Service, Name: a.Instance, Sidecar: a.Sidecar}}
	setFields(&e.inst, a)
	r.stamp(e, a, now)
	s.entries[a.Instance] = e
	i, _ := slices.BinarySearchFunc(s.sorted, a.Instance, byName)
	s.sorted = slices.Insert(s.sorted, i, e)
	r.wheel.add(e)
	if e.inst.Healthy {
		r.markDirty(s)
	}
	return true
}

func byName(e *entry, name string) int { return cmp.Compare(e.inst.Name, name) }

// refresh records an owner's hello about its entry: the lifetime starts
// again; the snapshot is rebuilt only if health, version, zone, labels or
// capacity changed (the load readings are not worth a rebuild).
func (r *Registry) refresh(s *service, e *entry, a *busmeshv1.Announcement, now time.Time) bool {
	old := e.inst
	setFields(&e.inst, a)
	old.Concurrency, old.ServiceTime = e.shownConcurrency, e.shownServiceTime
	e.seq = a.Seq
	r.stamp(e, a, now)
	r.wheel.move(e)
	changed := old.Healthy != e.inst.Healthy || old.Version != e.inst.Version || old.Zone != e.inst.Zone
	if changed || !maps.Equal(old.Labels, e.inst.Labels) || capacityMoved(&old, &e.inst) {
		r.markDirty(s)
	}
	return changed
}

// capacityMoved reports whether what an instance can take moved enough
// since its snapshot was made for the snapshot to follow: its concurrency
// changed, it measured its first call, or its service time moved by a
// factor of more than 1.5 (up by half, or down by a third).
// Callers size what they send it from these (ambassador/capacity.go).
func capacityMoved(old, now *Instance) bool {
	if old.Concurrency != now.Concurrency || (old.ServiceTime == 0) != (now.ServiceTime == 0) {
		return true
	}
	return 2*now.ServiceTime > 3*old.ServiceTime || 3*now.ServiceTime < 2*old.ServiceTime
}

// setFields copies what an owner says of its instance.
func setFields(in *Instance, a *busmeshv1.Announcement) {
	in.Version, in.Zone, in.Healthy = a.Version, a.Zone, a.Healthy
	if !maps.Equal(in.Labels, a.Labels) {
		in.Labels = maps.Clone(a.Labels)
	}
	in.Inflight, in.Concurrency = int(a.Inflight), int(a.Concurrency)
	in.P50 = time.Duration(a.P50Micros) * time.Microsecond
	in.NoServiceTime = a.ServiceTimeMicros == nil
	in.ServiceTime = time.Duration(min(a.GetServiceTimeMicros(), uint64(time.Hour/time.Microsecond))) * time.Microsecond
}

// stamp starts an entry's lifetime now.
func (r *Registry) stamp(e *entry, a *busmeshv1.Announcement, now time.Time) {
	e.inst.LastSeen, e.inst.TTL = now, r.ttl(a)
	e.deadline = r.since(now) + e.inst.TTL
}

// heardOwner notes that the owner spoke: if a rival spoke recently too,
// two live sidecars claim the instance.
func (r *Registry) heardOwner(e *entry, at time.Duration) {
	if e.rival == (owner{}) {
		return
	}
	if at-e.rivalSeen > e.rivalTTL {
		e.rival, e.inst.Conflict = owner{}, "" // the rival went quiet
		return
	}
	e.ownerSpoke = true
	r.conflict(e)
}

// heardRival notes another sender's hello about e, which is ignored and
// counted, and kept in case the owner leaves first.
func (r *Registry) heardRival(e *entry, from owner, a *busmeshv1.Announcement, at time.Duration) {
	r.rejected.foreign.Inc()
	if e.rival != from {
		e.rival, e.ownerSpoke, e.inst.Conflict = from, false, ""
	}
	if !e.verified && (e.verifyAsked == 0 || at-e.verifyAsked > r.interval) {
		// Which of the two is a live adapter? Ask the instance.
		e.verifyAsked = at
		select {
		case r.verify <- verification{e.inst.Service, e.inst.Name}:
		default:
		}
	}
	e.rivalSeen, e.rivalTTL, e.rivalSeq, e.rivalHealthy = at, r.ttl(a), a.Seq, a.Healthy
	if e.ownerSpoke {
		r.conflict(e)
	}
}

// conflict marks and logs (once) an instance id two live sidecars claim.
func (r *Registry) conflict(e *entry) {
	if e.inst.Conflict != "" {
		return
	}
	e.inst.Conflict = e.rival.String()
	r.logger.Warn("instance id claimed by two live sidecars: the second is ignored until the first leaves",
		telemetry.KeyService, e.inst.Service, telemetry.KeyInstance, e.inst.Name,
		"owner", e.owner.String(), "rival", e.rival.String())
}

// leave ends the owner's claim on e: a rival heard within its lifetime
// takes the entry over, or the entry goes. It reports whether the healthy
// set changed.
func (r *Registry) leave(s *service, e *entry, at time.Duration) bool {
	wasHealthy := e.inst.Healthy && e.suspectUntil <= at
	r.tombs.bury(tombKey{e.inst.Service, e.inst.Name, e.owner}, e.seq, at)
	if e.rival != (owner{}) && at-e.rivalSeen <= e.rivalTTL {
		e.owner, e.seq = e.rival, e.rivalSeq
		e.inst.Sidecar, e.inst.Healthy, e.inst.Conflict = e.rival.sidecar, e.rivalHealthy, ""
		e.inst.TTL, e.inst.LastSeen = e.rivalTTL, r.epoch.Add(e.rivalSeen)
		e.deadline = e.rivalSeen + e.rivalTTL
		e.rival, e.ownerSpoke, e.suspectUntil, e.suspectFor, e.verified = owner{}, false, 0, 0, false
		r.wheel.move(e)
		r.markDirty(s)
		return wasHealthy != e.inst.Healthy
	}
	r.wheel.remove(e)
	delete(s.entries, e.inst.Name)
	if len(s.entries) == 0 {
		s.lastServed = at
	}
	if i, ok := slices.BinarySearchFunc(s.sorted, e.inst.Name, byName); ok {
		s.sorted = slices.Delete(s.sorted, i, i+1)
	}
	if e.inst.Healthy {
		r.markDirty(s)
	}
	return true
}

// markDirty queues s's snapshot for rebuilding; r.mu is held.
func (r *Registry) markDirty(s *service) {
	if !s.dirty {
		s.dirty = true
		r.dirty = append(r.dirty, s)
	}
}

// flush rebuilds the snapshots of the services that changed, each at most
// once per its gap (snapshotEvery and snapshotPerInstance); those not due
// wait for the next flush.
func (r *Registry) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	var next time.Duration
	kept := r.dirty[:0]
	for _, s := range r.dirty {
		wait := s.built.Add(snapshotEvery + time.Duration(len(s.sorted))*snapshotPerInstance).Sub(now)
		if wait > 0 {
			kept = append(kept, s)
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		s.dirty = false
		s.built = now
		r.publish(s, r.since(r.now()))
	}
	clear(r.dirty[len(kept):])
	r.dirty = kept
	r.flushArmed = len(kept) > 0
	if r.flushArmed {
		r.flushTimer.Reset(next)
	}
}

// flushLocked rebuilds every snapshot that changed, now.
func (r *Registry) flushLocked() {
	at := r.since(r.now())
	for _, s := range r.dirty {
		s.dirty = false
		r.publish(s, at)
	}
	clear(r.dirty)
	r.dirty = r.dirty[:0]
	r.flushArmed = false
}

// publish rebuilds s's snapshot of healthy instances: one pass over the
// instances, already in name order.
func (r *Registry) publish(s *service, at time.Duration) {
	healthy := make([]Instance, 0, len(s.sorted))
	for _, e := range s.sorted {
		e.shownConcurrency, e.shownServiceTime = e.inst.Concurrency, e.inst.ServiceTime
		if e.inst.Healthy && e.suspectUntil <= at {
			healthy = append(healthy, e.inst)
		}
	}
	s.healthy.Store(&healthy)
	if !s.routed.Load() || r.hearingOver(s, at) {
		s.seen = nil // AwaitFirst waits only within a routed service's first hearing
		return
	}
	news := false
	for i := range healthy {
		news = s.see(healthy[i].Version) || news
	}
	if len(healthy) > 0 {
		news = s.see("") || news
	}
	if news { // wake AwaitFirst
		close(s.heard)
		s.heard = make(chan struct{})
	}
}

// see records that version had a healthy instance, and reports whether
// that is new. Called with the registry's mu held.
func (s *service) see(version string) bool {
	if _, ok := s.seen[version]; ok {
		return false
	}
	if s.seen == nil {
		s.seen = map[string]struct{}{}
	}
	s.seen[version] = struct{}{}
	return true
}

// Expire forgets instances not heard from within their lifetime, and
// returns them. Its cost is the time passed and the instances expired,
// not the instances kept.
func (r *Registry) Expire() []Instance {
	var gone []Instance
	r.mu.Lock()
	defer r.mu.Unlock()
	at := r.since(r.now())
	services := *r.services.Load()
	r.wheel.expire(at, func(e *entry) {
		s := services[e.inst.Service]
		if s == nil || s.entries[e.inst.Name] != e {
			return
		}
		gone = append(gone, e.inst)
		r.leave(s, e, at)
	})
	r.reviewLocked(at)
	r.tombs.prune(at)
	r.flushLocked()
	return gone
}

// Suspect leaves an instance out of the healthy snapshot for a while: the
// broker found nobody behind it (a call to it came back "no responders"),
// as for an instance announced by someone else than its adapter. Each
// suspicion in a row doubles the time, up to a minute; an instance that
// is really there takes calls again after a second. The last healthy
// instance of a service is never left out.
func (r *Registry) Suspect(service, instance string) {
	s := (*r.services.Load())[service]
	if s == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := s.entries[instance]
	if e == nil {
		return
	}
	at := r.since(r.now())
	if e.suspectUntil > at || len(*s.healthy.Load()) <= 1 {
		return // already out, or the last one: nothing better to offer
	}
	if e.suspectFor == 0 || at-e.suspectUntil > 2*suspectMax {
		e.suspectFor = suspectFirst
	} else {
		e.suspectFor = min(2*e.suspectFor, suspectMax)
	}
	e.suspectUntil = at + e.suspectFor
	r.publish(s, at)
	r.reviews = append(r.reviews, review{s, e.suspectUntil})
}

// review is a service whose snapshot must be rebuilt at a time: a
// suspicion ends.
type review struct {
	s  *service
	at time.Duration
}

// reviewLocked marks the services whose suspicions ended by at.
func (r *Registry) reviewLocked(at time.Duration) {
	kept := r.reviews[:0]
	for _, v := range r.reviews {
		if v.at <= at {
			r.markDirty(v.s)
		} else {
			kept = append(kept, v)
		}
	}
	clear(r.reviews[len(kept):])
	r.reviews = kept
}

// Healthy returns the healthy instances of a service, sorted by name. The
// slice is shared: callers must not modify it. It takes no lock and
// allocates nothing; a service not watched yet is asked for in the
// background (see Learn to wait for it).
func (r *Registry) Healthy(name string) []Instance {
	s := (*r.services.Load())[name]
	if s == nil {
		select {
		case r.asks <- name:
		default:
		}
		return nil
	}
	return *s.healthy.Load()
}

// Has reports whether some instance of a service is known, healthy or
// not. Unlike Healthy, it does not ask for a service not watched yet.
func (r *Registry) Has(name string) bool {
	s := (*r.services.Load())[name]
	if s == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(s.entries) > 0
}

// Instances returns every known instance of a service, healthy or not,
// sorted by name.
func (r *Registry) Instances(name string) []Instance {
	s := (*r.services.Load())[name]
	if s == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Instance, len(s.sorted))
	for i, e := range s.sorted {
		out[i] = e.inst
	}
	return out
}

// Services returns the names of the services with known instances, sorted.
func (r *Registry) Services() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for name, s := range *r.services.Load() {
		if len(s.entries) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
