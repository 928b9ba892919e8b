package adapter

import (
	"context"
	"time"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// checkApp checks the application once: an HTTP GET of the health path, or
// the gRPC health protocol, within the configured timeout.
func (a *Adapter) checkApp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Health.Timeout.D())
	defer cancel()
	return a.app.check(ctx)
}

// watchHealth checks the application at every interval until ctx ends.
// After unhealthy_after failures in a row the adapter stops taking calls
// and announces itself unhealthy; after healthy_after successes it takes
// calls again.
func (a *Adapter) watchHealth(ctx context.Context, healthy bool) {
	h := a.cfg.Health
	t := time.NewTicker(h.Interval.D())
	defer t.Stop()
	streak := 0 // consecutive results against the current state
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		err := a.checkApp(ctx)
		if ctx.Err() != nil {
			return
		}
		if (err == nil) == healthy {
			streak = 0
			continue
		}
		streak++
		if healthy && streak >= h.UnhealthyAfter {
			a.logger.Warn("application unhealthy: taking no calls", telemetry.KeyErr, err)
			healthy, streak = false, 0
			a.setHealthy(false)
		} else if !healthy && streak >= h.HealthyAfter {
			a.logger.Info("application healthy: taking calls again")
			healthy, streak = true, 0
			a.setHealthy(true)
		}
	}
}
