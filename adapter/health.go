package adapter

import (
	"context"
	"fmt"
	"net/http"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// checkApp checks the application once: an HTTP GET of the health path, or
// the gRPC health protocol.
func (a *Adapter) checkApp(ctx context.Context) error {
	h := a.cfg.Health
	ctx, cancel := context.WithTimeout(ctx, h.Timeout.D())
	defer cancel()
	if h.GRPC {
		resp, err := healthpb.NewHealthClient(a.grpc).Check(ctx, &healthpb.HealthCheckRequest{Service: h.GRPCService})
		if err != nil {
			return err
		}
		if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %v", s)
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.target+h.HTTP, nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: status %d", h.HTTP, resp.StatusCode)
	}
	return nil
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
			a.setServing(ctx, false)
		} else if !healthy && streak >= h.HealthyAfter {
			a.logger.Info("application healthy: taking calls again")
			healthy, streak = true, 0
			a.setServing(ctx, true)
		}
	}
}
