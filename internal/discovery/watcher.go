package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// expirySweep is how often a Watcher forgets silent instances: a small
// fraction of the default lifetime (6s).
const expirySweep = 200 * time.Millisecond

// askSettle bounds the wait for the answers to a ping: a service that
// none answered by then counts as answered (it has no instances).
const askSettle = 250 * time.Millisecond

// Watcher keeps a Registry up to date for the services it watches, and
// only those: it subscribes to each one's discovery subject and pings its
// adapters, which answer to the Watcher's own inbox. It follows the
// registry's set of services (Route, and services asked for by calls).
type Watcher struct {
	b        broker.Broker
	subjects broker.Subjects
	reg      *Registry
	logger   *slog.Logger
	id       string // the inbox token
	inbox    broker.Subscription
	checker  *checker        // nil without an identity
	ctx      context.Context // the subscriptions'; cancelled by Close
	cancel   context.CancelFunc
	stop     chan struct{}
	wg       sync.WaitGroup

	mu   sync.Mutex
	subs map[string]broker.Subscription // by service
	// retry holds the watched services whose subscription failed (the
	// broker away, a Kafka topic slow to come): each sweep and the return
	// of the connection subscribe them again. Else reconcile, which runs
	// only when the set of services changes, would leave them deaf for
	// good. Only the loop (and WatchWith before it starts) subscribes, so
	// a retry never races a reconcile into a second subscription.
	retry map[string]bool

	// While this sidecar's own broker connection is down it hears nobody,
	// so silence proves nothing: nothing expires, and after the
	// connection is back every watched service is asked again and given
	// reconnectGrace to answer before expiry resumes.
	offline   bool
	graceTill time.Time
}

// reconnectGrace is how long after its broker connection is back a
// Watcher waits at least for answers before it expires anything; at most,
// an instance's lifetime (see expire).
const reconnectGrace = time.Second

// WatchOptions configure a Watcher.
type WatchOptions struct {
	// Mesh is the mesh watched ("" is the default mesh).
	Mesh string
	// Sidecar names the Watcher's inbox for answers
	// (busmesh.<mesh>.inbox.<Sidecar>.discovery); "" draws a random name.
	// On Kafka, where each inbox is a topic, a sidecar's own id keeps
	// restarts from adding topics.
	Sidecar string
	// Logger logs expiries and failures; nil discards.
	Logger *slog.Logger
	// Settle is how long Watch waits for the first answers.
	Settle time.Duration
	// Identity, when set, makes the Watcher believe only announcements
	// signed by a certificate of this identity's mesh CA naming the
	// announced service (docs/security.md); nil believes all, unsigned.
	Identity *identity.Source
}

// Watch is WatchWith for mesh, with a random inbox name.
func Watch(ctx context.Context, b broker.Broker, mesh string, reg *Registry, logger *slog.Logger, settle time.Duration) (*Watcher, error) {
	return WatchWith(ctx, b, reg, WatchOptions{Mesh: mesh, Logger: logger, Settle: settle})
}

// WatchWith watches the services reg names: it subscribes to their
// discovery subjects, asks their instances, and waits up to o.Settle for
// the answers when there are services to ask. It then follows reg:
// services added by Route or asked for by calls are subscribed and asked,
// services dropped are unsubscribed. Close stops it.
func WatchWith(ctx context.Context, b broker.Broker, reg *Registry, o WatchOptions) (*Watcher, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	id := o.Sidecar
	if id == "" {
		id = "w" + newIncarnation()
	}
	w := &Watcher{
		b: b, subjects: broker.NewSubjects(o.Mesh), reg: reg,
		logger: logger.With(telemetry.KeyComponent, "discovery"),
		id:     id,
		stop:   make(chan struct{}),
		subs:   map[string]broker.Subscription{},
		retry:  map[string]bool{},
	}
	w.checker = newChecker(o.Identity, reg.rejected, w.logger)
	settle := o.Settle
	w.ctx, w.cancel = context.WithCancel(context.WithoutCancel(ctx))
	inbox, err := b.Subscribe(w.ctx, w.subjects.DiscoveryInbox(w.id), w.handleAnswer)
	if err != nil {
		w.cancel()
		return nil, fmt.Errorf("discovery inbox: %w", err)
	}
	w.inbox = inbox
	asked := w.reconcile()
	w.wg.Go(w.loop)
	if asked > 0 {
		t := time.NewTimer(settle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return w, nil
}

// loop follows the registry's services and sweeps expired instances.
func (w *Watcher) loop() {
	t := time.NewTicker(expirySweep)
	defer t.Stop()
	for {
		select {
		case <-w.reg.changed:
			w.reconcile()
		case name := <-w.reg.asks:
			w.reg.ensure(name) // signals changed when added
		case v := <-w.reg.verify:
			w.askInstance(v)
		case <-t.C:
			w.expire()
		case <-w.stop:
			return
		}
	}
}

// reconcile subscribes to the services the registry watches and the
// Watcher does not yet, asks each, and unsubscribes from those dropped. It
// returns how many it asked.
func (w *Watcher) reconcile() int {
	want := w.reg.Watched()
	wanted := make(map[string]bool, len(want))
	asked := 0
	for _, name := range want {
		wanted[name] = true
		w.mu.Lock()
		_, have := w.subs[name]
		w.mu.Unlock()
		if have {
			// A service dropped and watched again between two passes is a
			// new entry, with its subscription kept: ask again, or its
			// first calls would wait for an answer nobody asked for.
			if s := (*w.reg.services.Load())[name]; s != nil && !s.pinged.Load() {
				w.ask(name)
				asked++
			}
			continue
		}
		if !w.subscribe(name) {
			continue // retried at the next sweep
		}
		w.ask(name)
		asked++
	}
	w.mu.Lock()
	var drop []broker.Subscription
	for name, sub := range w.subs {
		if !wanted[name] {
			drop = append(drop, sub)
			delete(w.subs, name)
		}
	}
	for name := range w.retry {
		if !wanted[name] {
			delete(w.retry, name)
		}
	}
	w.mu.Unlock()
	for _, sub := range drop {
		_ = sub.Unsubscribe() // nothing to do about it
	}
	return asked
}

// subscribe subscribes to service's discovery subject, unless the Watcher
// already has, and reports whether it subscribed now. A failure is logged
// (once until it succeeds) and leaves the service to retry. Called only
// from the loop, or from WatchWith before the loop starts.
func (w *Watcher) subscribe(service string) bool {
	w.mu.Lock()
	_, have := w.subs[service]
	retrying := w.retry[service]
	w.mu.Unlock()
	if have {
		return false
	}
	sub, err := w.b.Subscribe(w.ctx, w.subjects.Discovery(service), w.handle)
	if err != nil {
		if retrying {
			w.logger.Debug("discovery subscription failed again", telemetry.KeyService, service, telemetry.KeyErr, err)
		} else {
			w.logger.Warn("discovery subscription failed: retrying", telemetry.KeyService, service, telemetry.KeyErr, err)
		}
		w.mu.Lock()
		w.retry[service] = true
		w.mu.Unlock()
		return false
	}
	w.mu.Lock()
	w.subs[service] = sub
	delete(w.retry, service)
	w.mu.Unlock()
	if retrying {
		w.logger.Info("discovery subscription restored", telemetry.KeyService, service)
	}
	return true
}

// resubscribe retries the subscriptions that failed, for the services
// still watched, and returns those it subscribed.
func (w *Watcher) resubscribe() []string {
	w.mu.Lock()
	if len(w.retry) == 0 {
		w.mu.Unlock()
		return nil
	}
	names := slices.Sorted(maps.Keys(w.retry))
	w.mu.Unlock()
	var done []string
	for _, name := range names {
		if !w.reg.Watching(name) {
			w.mu.Lock()
			delete(w.retry, name) // dropped since; reconcile will clear it too
			w.mu.Unlock()
			continue
		}
		if w.subscribe(name) {
			done = append(done, name)
		}
	}
	return done
}

// ask pings service's adapters, whose answers come to the Watcher's inbox;
// the service counts as answered at the first answer, or after askSettle.
func (w *Watcher) ask(service string) {
	if s := (*w.reg.services.Load())[service]; s != nil {
		s.pinged.Store(true)
	}
	ping, _ := proto.Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_PING, Service: service,
		ReplyTo: w.subjects.DiscoveryInbox(w.id)})
	if err := w.b.Publish(w.ctx, w.subjects.DiscoveryPing(service), ping); err != nil {
		w.logger.Warn("discovery ping not sent", telemetry.KeyService, service, telemetry.KeyErr, err)
	}
	w.wg.Go(func() {
		t := time.NewTimer(askSettle)
		defer t.Stop()
		select {
		case <-t.C:
		case <-w.stop:
		}
		w.reg.answer(service)
	})
}

// askInstance pings one instance of a service whose entry two senders
// claim: a live adapter answers to the Watcher's inbox, which settles who
// owns the entry (Registry.update).
func (w *Watcher) askInstance(v verification) {
	ping, _ := proto.Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_PING, Service: v.service,
		Instance: v.instance, ReplyTo: w.subjects.DiscoveryInbox(w.id)})
	if err := w.b.Publish(w.ctx, w.subjects.DiscoveryPing(v.service), ping); err != nil {
		w.logger.Debug("discovery ping not sent", telemetry.KeyService, v.service, telemetry.KeyInstance, v.instance,
			telemetry.KeyErr, err)
	}
}

// decode takes an announcement off the bus, counting what it drops.
func (w *Watcher) decode(data []byte) (*busmeshv1.Announcement, bool) {
	var a busmeshv1.Announcement
	if len(data) > maxAnnouncementBytes {
		w.reg.rejected.malformed.Inc()
		return nil, false
	}
	if err := proto.Unmarshal(data, &a); err != nil {
		w.reg.rejected.malformed.Inc()
		w.logger.Debug("announcement rejected", telemetry.KeyErr, err)
		return nil, false
	}
	return &a, true
}

// handle applies an announcement heard on a service's subject.
func (w *Watcher) handle(_ context.Context, data []byte) {
	a, ok := w.decode(data)
	if !ok || a.Kind == busmeshv1.Announcement_KIND_PING || !w.checker.check(data, a) {
		return
	}
	if w.reg.update(a, false) {
		w.logger.Debug("instance changed", telemetry.KeyService, a.Service, telemetry.KeyInstance, a.Instance,
			"kind", a.Kind.String(), "healthy", a.Healthy)
	}
}

// handleAnswer applies an answer to a ping.
func (w *Watcher) handleAnswer(ctx context.Context, data []byte) {
	a, ok := w.decode(data)
	if !ok || a.Kind != busmeshv1.Announcement_KIND_HELLO || !w.checker.check(data, a) {
		return
	}
	w.reg.update(a, true)
	w.reg.answer(a.Service)
}

// expire forgets silent instances, logging them (a few by name) — unless
// the silence is this sidecar's own, its broker connection down or just
// back — after retrying the subscriptions that failed, while connected.
func (w *Watcher) expire() {
	now := time.Now()
	if !broker.Connected(w.b) {
		w.offline = true
		return
	}
	if w.offline {
		// Every instance gets a lifetime from now to be heard again: the
		// adapters lost the broker too, and may take longer than this
		// sidecar to be back. One that died meanwhile goes a lifetime
		// late; one that lives is not dropped while it reconnects.
		// Subscriptions that failed meanwhile come first: the answers to
		// the pings can be heard without them, the heartbeats not.
		w.offline, w.graceTill = false, now.Add(max(reconnectGrace, ttlIntervals*w.reg.interval))
		w.resubscribe()
		for _, name := range w.reg.Watched() {
			w.ask(name)
		}
	} else {
		for _, name := range w.resubscribe() {
			w.ask(name)
		}
	}
	if now.Before(w.graceTill) {
		return
	}
	gone := w.reg.Expire()
	for i, inst := range gone {
		if i == 5 {
			w.logger.Info("instances expired", "more", len(gone)-i)
			break
		}
		w.logger.Info("instance expired", telemetry.KeyService, inst.Service, telemetry.KeyInstance, inst.Name,
			"last_seen", inst.LastSeen)
	}
}

// Close stops watching.
func (w *Watcher) Close() error {
	close(w.stop)
	w.cancel()
	w.wg.Wait()
	err := w.inbox.Unsubscribe()
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, sub := range w.subs {
		if uerr := sub.Unsubscribe(); uerr != nil && err == nil {
			err = uerr
		}
		delete(w.subs, name)
	}
	return err
}
