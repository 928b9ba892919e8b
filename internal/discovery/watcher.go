package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// expirySweep is how often a Watcher forgets silent instances: a small
// fraction of the default TTL (6s).
const expirySweep = 200 * time.Millisecond

// Watcher keeps a Registry up to date from the announcements on the bus.
type Watcher struct {
	reg    *Registry
	logger *slog.Logger
	sub    broker.Subscription
	stop   chan struct{}
	wg     sync.WaitGroup
}

// Watch subscribes reg to mesh's announcements ("" is the default mesh), pings every adapter so
// that reg fills within one round trip instead of one interval, and waits
// settle for the answers. Close stops it.
func Watch(ctx context.Context, b broker.Broker, mesh string, reg *Registry, logger *slog.Logger, settle time.Duration) (*Watcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{reg: reg, logger: logger.With(telemetry.KeyComponent, "discovery"), stop: make(chan struct{})}
	subjects := broker.NewSubjects(mesh)
	sub, err := b.Subscribe(ctx, subjects.Discovery(), w.handle)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	w.sub = sub
	ping, _ := proto.Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_PING})
	if err := b.Publish(ctx, subjects.DiscoveryPing(), ping); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("discovery ping: %w", err)
	}
	w.wg.Go(w.expire)
	t := time.NewTimer(settle)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return w, nil
}

func (w *Watcher) handle(_ context.Context, data []byte) {
	var a busmeshv1.Announcement
	if err := proto.Unmarshal(data, &a); err != nil {
		w.logger.Debug("announcement rejected", telemetry.KeyErr, err)
		return
	}
	if w.reg.Apply(&a) {
		w.logger.Debug("instance changed", telemetry.KeyService, a.Service, telemetry.KeyInstance, a.Instance,
			"kind", a.Kind.String(), "healthy", a.Healthy)
	}
}

func (w *Watcher) expire() {
	t := time.NewTicker(expirySweep)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			for _, inst := range w.reg.Expire() {
				w.logger.Info("instance expired", telemetry.KeyService, inst.Service, telemetry.KeyInstance, inst.Name,
					"last_seen", inst.LastSeen)
			}
		case <-w.stop:
			return
		}
	}
}

// Close stops watching.
func (w *Watcher) Close() error {
	close(w.stop)
	err := w.sub.Unsubscribe()
	w.wg.Wait()
	return err
}
