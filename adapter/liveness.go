package adapter

import (
	"context"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Liveness: a call lives as long as its caller wants it. A caller that
// goes away says so with a cancel; one that vanishes without a word (its
// process killed, its network cut) cannot. So a call that has heard nothing
// from its caller for probeInterval is probed: a ping to the caller's inbox,
// which the ambassador answers with a pong while it still waits for the
// call, or with a cancel when it no longer knows it. After maxProbes
// unanswered pings the call is reaped: its context is cancelled, the
// application sees the cancellation and the worker is free. A call's
// caller is thus known gone within (maxProbes+1) × probeInterval.
const (
	probeInterval = 2 * time.Second
	maxProbes     = 2
)

// heard records that the caller of c said something.
func (c *serverCall) heard() {
	c.lastHeard.Store(time.Now().UnixNano())
	c.probes.Store(0)
}

// probeCallers runs until ctx ends: every probeInterval it pings the
// callers of calls that have been quiet that long, and reaps the calls
// whose callers have not answered maxProbes pings.
func (a *Adapter) probeCallers(ctx context.Context) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		quietSince := time.Now().Add(-probeInterval).UnixNano()
		for _, c := range a.calls.quiet(quietSince) {
			if c.probes.Add(1) > maxProbes {
				a.metrics.CallsReaped.WithLabelValues(a.cfg.Service).Inc()
				a.logger.Warn("caller vanished: call reaped", telemetry.KeyEnvelopeID, c.req.ID, "caller", c.req.Source)
				c.cancel()
				continue
			}
			ping := envelope.Frame{ID: c.req.ID, Ping: true, ReplyTo: a.inbox, Instance: a.cfg.Instance}
			pctx, cancel := context.WithTimeout(a.forPeer(ctx, c.req), probeInterval/2)
			if err := a.pub.Publish(pctx, c.req.ReplyTo, &ping); err != nil {
				a.logger.Debug("ping not sent", telemetry.KeySubject, c.req.ReplyTo, telemetry.KeyErr, err)
			}
			cancel()
		}
	}
}

// quiet returns the calls whose callers have said nothing since the given
// unix nanoseconds.
func (t *callTable) quiet(since int64) []*serverCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*serverCall
	for _, c := range t.m {
		if c.lastHeard.Load() < since {
			out = append(out, c)
		}
	}
	return out
}
