package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
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
type Readings func() (inflight int, p50 time.Duration)

// Announcer announces one adapter instance: a hello at once, at every
// interval, on every change of health and in answer to pings; a goodbye
// when it stops.
type Announcer struct {
	b        broker.Broker
	subjects broker.Subjects
	self     Self
	interval time.Duration
	readings Readings
	logger   *slog.Logger

	mu      sync.Mutex
	healthy bool
	seq     uint64

	wake chan struct{}
	stop chan struct{}
	sub  broker.Subscription
	wg   sync.WaitGroup
}

// NewAnnouncer returns an Announcer; Start begins announcing.
func NewAnnouncer(b broker.Broker, self Self, interval time.Duration, readings Readings, logger *slog.Logger) *Announcer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if readings == nil {
		readings = func() (int, time.Duration) { return 0, 0 }
	}
	return &Announcer{
		b: b, subjects: broker.NewSubjects(self.Mesh), self: self, interval: interval, readings: readings,
		logger: logger.With(telemetry.KeyComponent, "discovery"),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
}

// Start answers pings and announces, healthy or not, now and at every
// interval.
func (a *Announcer) Start(ctx context.Context, healthy bool) error {
	a.mu.Lock()
	a.healthy = healthy
	a.mu.Unlock()
	sub, err := a.b.Subscribe(ctx, a.subjects.DiscoveryPing(), func(context.Context, []byte) {
		// Spread the answers of a large mesh over a few milliseconds.
		time.AfterFunc(rand.N(20*time.Millisecond), a.Announce)
	})
	if err != nil {
		return fmt.Errorf("discovery ping subscription: %w", err)
	}
	a.sub = sub
	if err := a.send(ctx, busmeshv1.Announcement_KIND_HELLO); err != nil {
		a.logger.Warn("announcement not sent", telemetry.KeyErr, err)
	}
	a.wg.Go(a.loop)
	return nil
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
	for {
		select {
		case <-t.C:
		case <-a.wake:
		case <-a.stop:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.interval)
		if err := a.send(ctx, busmeshv1.Announcement_KIND_HELLO); err != nil {
			a.logger.Warn("announcement not sent", telemetry.KeyErr, err)
		}
		cancel()
	}
}

func (a *Announcer) send(ctx context.Context, kind busmeshv1.Announcement_Kind) error {
	inflight, p50 := a.readings()
	a.mu.Lock()
	a.seq++
	msg := &busmeshv1.Announcement{
		Kind:        kind,
		Service:     a.self.Service,
		Instance:    a.self.Instance,
		Version:     a.self.Version,
		Labels:      a.self.Labels,
		Zone:        a.self.Zone,
		Sidecar:     a.self.Sidecar,
		Healthy:     a.healthy,
		Inflight:    uint32(max(inflight, 0)),
		Concurrency: uint32(max(a.self.Concurrency, 0)),
		IntervalMs:  uint32(a.interval.Milliseconds()),
		Seq:         a.seq,
		P50Micros:   uint64(p50.Microseconds()),
	}
	a.mu.Unlock()
	data, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	return a.b.Publish(ctx, a.subjects.Discovery(), data)
}

// Stop says goodbye and stops announcing.
func (a *Announcer) Stop(ctx context.Context) error {
	close(a.stop)
	a.wg.Wait()
	var err error
	if a.sub != nil {
		err = a.sub.Unsubscribe()
	}
	if gerr := a.send(ctx, busmeshv1.Announcement_KIND_GOODBYE); gerr != nil {
		err = gerr
	}
	return err
}
