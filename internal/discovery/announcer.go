package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// Self describes the instance an Announcer announces.
type Self struct {
	Service     string
	Instance    string
	Version     string
	Zone        string
	Labels      map[string]string
	Sidecar     string
	Concurrency int
	// Mesh is the mesh the instance is announced in ("" is the default).
	Mesh string
}

// Readings are an adapter's current load, sent with each announcement.
type Readings func() Load

// Load is what an adapter measures of itself.
type Load struct {
	// Inflight is the calls being made to the application now.
	Inflight int
	// P50 is the application's median time over the last interval (0 when
	// it served none).
	P50 time.Duration
	// ServiceTime is the moving estimate of how long a call holds a
	// concurrency slot (0 before the first call); it stays while idle.
	ServiceTime time.Duration
}

// Ping answers are coalesced: those asked within answerDelay (plus up to
// as much again, at random, so a service's adapters do not answer in one
// burst) go out together, one per asker, at most maxAskers of them; a
// storm of pings costs an adapter at most maxAskers answers per window.
const (
	answerDelay = 5 * time.Millisecond
	maxAskers   = 32
)

// Distinct askers are answered at most answerRate a second, in bursts of
// answerBurst: ambassadors start rarely, and one that is not answered
// hears the next heartbeat. A storm of pings with a new reply subject
// each costs an adapter no more.
const (
	answerRate  = 100
	answerBurst = 100
)

// maxAnnouncementBytes bounds a discovery message: a larger one is
// dropped and counted, so a neighbour cannot fill a registry's memory
// through labels.
const maxAnnouncementBytes = 8 << 10

// Announcer announces one adapter instance on its service's discovery
// subject: a hello at once and on every change of health, a heartbeat
// hello at every interval, a goodbye when it stops. It answers pings for
// its service, coalesced, to each asker's inbox. At start it asks whether
// another live sidecar claims its instance id, and logs the conflict (the
// other sidecar logs it too).
type Announcer struct {
	b           broker.Broker
	subjects    broker.Subjects
	self        Self
	incarnation string
	interval    time.Duration
	readings    Readings
	logger      *slog.Logger
	rejected    rejections
	answers     *rate.Limiter
	signer      *Signer  // nil without an identity
	checker     *checker // nil without an identity
	src         *identity.Source

	mu      sync.Mutex
	healthy bool
	seq     uint64
	askers  map[string]bool // reply subjects waiting for an answer
	rivals  map[owner]bool  // sidecars seen claiming this instance

	wake  chan struct{}
	asked chan struct{}
	stop  chan struct{}
	sub   broker.Subscription
	wg    sync.WaitGroup
}

// NewAnnouncer returns an Announcer; Start begins announcing.
func NewAnnouncer(b broker.Broker, self Self, interval time.Duration, readings Readings, logger *slog.Logger) *Announcer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if readings == nil {
		readings = func() Load { return Load{} }
	}
	return &Announcer{
		b: b, subjects: broker.NewSubjects(self.Mesh), self: self, interval: interval, readings: readings,
		incarnation: newIncarnation(),
		logger:      logger.With(telemetry.KeyComponent, "discovery"),
		rejected:    newRejections(nil),
		answers:     rate.NewLimiter(answerRate, answerBurst),
		askers:      map[string]bool{},
		rivals:      map[owner]bool{},
		wake:        make(chan struct{}, 1),
		asked:       make(chan struct{}, 1),
		stop:        make(chan struct{}),
	}
}

// WithMetrics counts the discovery messages the Announcer drops in m's
// busmesh_envelopes_rejected_total{component="discovery"}. Call it before
// Start.
func (a *Announcer) WithMetrics(m *telemetry.Metrics) *Announcer {
	a.rejected = newRejections(m)
	return a
}

// WithIdentity signs what the Announcer sends with src's current identity
// (hellos, goodbyes, ping answers and its claim at start), and believes
// another sidecar's claim on its instance only if signed. Call it before
// Start, after WithMetrics; nil src leaves it unsigned.
func (a *Announcer) WithIdentity(src *identity.Source) *Announcer {
	a.src, a.signer = src, NewSigner(src)
	return a
}

// newIncarnation draws the random id of one start of a sidecar.
func newIncarnation() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// Incarnation is the random id of this start of the instance.
func (a *Announcer) Incarnation() string { return a.incarnation }

// Start answers pings and announces, healthy or not, now and at every
// interval.
func (a *Announcer) Start(ctx context.Context, healthy bool) error {
	a.mu.Lock()
	a.healthy = healthy
	a.mu.Unlock()
	a.checker = newChecker(a.src, a.rejected, a.logger)
	ping := a.subjects.DiscoveryPing(a.self.Service)
	sub, err := a.b.Subscribe(ctx, ping, a.handle)
	if err != nil {
		return fmt.Errorf("discovery ping subscription: %w", err)
	}
	a.sub = sub
	if err := a.send(ctx, busmeshv1.Announcement_KIND_HELLO, a.subjects.Discovery(a.self.Service)); err != nil {
		a.logger.Warn("announcement not sent", telemetry.KeyErr, err)
	}
	// Does another live sidecar claim this instance? Its answer comes back
	// on the ping subject, which this Announcer reads.
	claim, err := a.signer.marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_PING, Service: a.self.Service,
		Instance: a.self.Instance, Sidecar: a.self.Sidecar, Incarnation: a.incarnation, ReplyTo: ping}, true)
	if err == nil {
		err = a.b.Publish(ctx, ping, claim)
	}
	if err != nil {
		a.logger.Warn("instance claim not sent", telemetry.KeyErr, err)
	}
	a.wg.Go(a.loop)
	return nil
}

// handle takes a message on the service's ping subject: a ping to answer,
// or another sidecar's answer to a claim of this instance id. Pings ask
// and are answered unsigned; a claim on this instance counts only when
// its credentials check (with an identity).
func (a *Announcer) handle(_ context.Context, data []byte) {
	var m busmeshv1.Announcement
	if len(data) > maxAnnouncementBytes || proto.Unmarshal(data, &m) != nil {
		a.rejected.malformed.Inc()
		return
	}
	from := owner{m.Sidecar, m.Incarnation}
	mine := from == owner{a.self.Sidecar, a.incarnation}
	switch {
	case mine:
	case m.Kind == busmeshv1.Announcement_KIND_HELLO:
		if m.Instance == a.self.Instance && a.checker.check(data, &m) {
			a.rival(from)
		}
	case m.Kind == busmeshv1.Announcement_KIND_PING:
		if m.Instance != "" && m.Instance != a.self.Instance {
			return
		}
		if m.Instance == a.self.Instance && m.Sidecar != "" && a.checker.check(data, &m) {
			a.rival(from)
		}
		a.ask(m.ReplyTo)
	}
}

// rival logs, once per sidecar, that another live sidecar claims this
// instance id.
func (a *Announcer) rival(o owner) {
	a.mu.Lock()
	seen := a.rivals[o]
	if !seen && len(a.rivals) < maxAskers {
		a.rivals[o] = true
	}
	a.mu.Unlock()
	if !seen {
		a.logger.Warn("instance id also claimed by another live sidecar: callers' registries keep the first",
			telemetry.KeyInstance, a.self.Instance, "rival", o.String(), "incarnation", a.incarnation)
	}
}

// ask queues an answer to replyTo ("" answers on the service's discovery
// subject). Only this mesh's inboxes and the service's own ping subject
// are answered: an adapter is no amplifier onto other subjects.
func (a *Announcer) ask(replyTo string) {
	switch {
	case replyTo == "":
		replyTo = a.subjects.Discovery(a.self.Service)
	case replyTo == a.subjects.DiscoveryPing(a.self.Service):
	case !broker.IsInbox(replyTo) || !strings.HasPrefix(replyTo, a.subjects.Inbox("")):
		a.rejected.malformed.Inc()
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.askers[replyTo] {
		return // coalesced
	}
	if len(a.askers) >= maxAskers || !a.answers.Allow() {
		a.rejected.pingLimit.Inc()
		return
	}
	a.askers[replyTo] = true
	select {
	case a.asked <- struct{}{}:
	default:
	}
}

// answer sends one hello to each asker queued.
func (a *Announcer) answer() {
	a.mu.Lock()
	askers := a.askers
	a.askers = map[string]bool{}
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), a.interval)
	defer cancel()
	for to := range askers {
		if err := a.send(ctx, busmeshv1.Announcement_KIND_HELLO, to); err != nil {
			a.logger.Debug("ping answer not sent", telemetry.KeySubject, to, telemetry.KeyErr, err)
		}
	}
}

// SetHealthy changes the announced health, announcing at once on a change.
func (a *Announcer) SetHealthy(healthy bool) {
	a.mu.Lock()
	changed := a.healthy != healthy
	a.healthy = healthy
	a.mu.Unlock()
	if changed {
		a.Announce()
	}
}

// Announce sends a hello now (asynchronously).
func (a *Announcer) Announce() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Announcer) loop() {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	subject := a.subjects.Discovery(a.self.Service)
	var answers <-chan time.Time // while answers are being gathered
	for {
		select {
		case <-t.C:
		case <-a.wake:
		case <-a.asked:
			if answers == nil {
				answers = time.After(answerDelay + mrand.N(answerDelay))
			}
			continue
		case <-answers:
			answers = nil
			a.answer()
			continue
		case <-a.stop:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.interval)
		if err := a.send(ctx, busmeshv1.Announcement_KIND_HELLO, subject); err != nil {
			a.logger.Warn("announcement not sent", telemetry.KeyErr, err)
		}
		cancel()
	}
}

// send publishes an announcement of kind to subject.
func (a *Announcer) send(ctx context.Context, kind busmeshv1.Announcement_Kind, subject string) error {
	load := a.readings()
	a.mu.Lock()
	a.seq++
	msg := &busmeshv1.Announcement{
		Kind:              kind,
		Service:           a.self.Service,
		Instance:          a.self.Instance,
		Version:           a.self.Version,
		Labels:            a.self.Labels,
		Zone:              a.self.Zone,
		Sidecar:           a.self.Sidecar,
		Incarnation:       a.incarnation,
		Healthy:           a.healthy,
		Inflight:          uint32(max(load.Inflight, 0)),
		Concurrency:       uint32(max(a.self.Concurrency, 0)),
		IntervalMs:        uint32(a.interval.Milliseconds()),
		Seq:               a.seq,
		P50Micros:         uint64(load.P50.Microseconds()),
		ServiceTimeMicros: proto.Uint64(serviceTimeMicros(load.ServiceTime)),
	}
	a.mu.Unlock()
	// What goes to one asker carries the certificate: it may not have it.
	data, err := a.signer.marshal(msg, subject != a.subjects.Discovery(a.self.Service))
	if err != nil {
		return err
	}
	return a.b.Publish(ctx, subject, data)
}

// Stop says goodbye and stops announcing.
func (a *Announcer) Stop(ctx context.Context) error {
	close(a.stop)
	a.wg.Wait()
	var err error
	if a.sub != nil {
		err = a.sub.Unsubscribe()
	}
	if gerr := a.send(ctx, busmeshv1.Announcement_KIND_GOODBYE, a.subjects.Discovery(a.self.Service)); gerr != nil {
		err = gerr
	}
	return err
}

// serviceTimeMicros is d in whole microseconds, at least 1 once measured:
// 0 says nothing was measured yet.
func serviceTimeMicros(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(max(d.Microseconds(), 1))
}
