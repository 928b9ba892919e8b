package ambassador

import (
	"context"
	"errors"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
)

// errNoHealthy is how publish says that no instance qualifies.
var errNoHealthy = errors.New("no healthy instance")

// available reports whether discovery knows a healthy instance that may
// take a call on rt. Without a registry it trusts the broker.
func (a *Ambassador) available(rt route) bool {
	if a.reg == nil {
		return true
	}
	healthy := a.reg.Healthy(rt.service)
	if rt.policy.Version == "" {
		return len(healthy) > 0
	}
	for i := range healthy {
		if healthy[i].Version == rt.policy.Version {
			return true
		}
	}
	return false
}

// publish sends call c's request: to the service's queue group, or in
// direct mode to the instance the balancer picks (other than avoid). It
// returns the picked instance's stats (nil in queue mode).
func (a *Ambassador) publish(ctx context.Context, rt route, c *call, req *envelope.Request, avoid *instanceStats) (*instanceStats, error) {
	subject := rt.subject
	var st *instanceStats
	if rt.policy.LB == config.LBDirect && a.reg != nil {
		if st = a.lb.pick(rt.service, a.reg.Healthy(rt.service), rt.policy, avoid); st == nil {
			return nil, errNoHealthy
		}
		subject = st.subject
		st.start()
	}
	enc := stream.GetBuffer()
	*enc = req.AppendEnvelope(*enc)
	err := a.inbox.publish(ctx, subject, c, *enc)
	stream.PutBuffer(enc)
	if err != nil && st != nil {
		st.finish(0, false)
		st = nil
	}
	return st, err
}

// await waits for call c's answer. It returns answered, or the call's
// failure, or neither when ctx ended first (its deadline, or the caller
// gone). In direct mode a request the broker hands back undelivered goes
// once more, to another instance: it never reached an application, so
// sending it again is safe.
func (a *Ambassador) await(ctx context.Context, rt route, c *call, req *envelope.Request, st *instanceStats) (bool, error) {
	start := time.Now()
	retried := false
	for {
		select {
		case <-c.ready:
		case <-ctx.Done():
		}
		c.mu.Lock()
		answered, err := c.answered, c.err
		c.mu.Unlock()
		if st != nil && errors.Is(err, errNoResponders) && !retried {
			retried = true
			st.finish(0, false)
			c.clearFailure()
			next, perr := a.publish(ctx, rt, c, req, st)
			if perr == nil {
				st = next
				continue
			}
			return false, err
		}
		if st != nil {
			// A timeout counts as a (long) sample: peak EWMA then keeps
			// calls away from the instance for a while.
			st.finish(time.Since(start), answered || err == nil)
		}
		return answered, err
	}
}

// sender waits until the adapter has accepted streaming call c, and
// returns the Sender of the call's further frames, to the adapter's inbox
// under the window it granted.
func (a *Ambassador) sender(ctx context.Context, c *call) (*stream.Sender, error) {
	select {
	case <-c.accepted:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return &stream.Sender{Broker: a.broker, Subject: c.peer, ID: c.id, Source: a.sidecar, Window: c.window}, nil
}
