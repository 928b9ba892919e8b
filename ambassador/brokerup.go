package ambassador

import (
	"context"

	"github.com/busmesh/busmesh/internal/reason"
)

// requireBroker answers a call broker-unavailable at once while the
// sidecar's connection to the call's broker is down (on a backend that can
// tell), instead of letting it wait in a reconnect buffer until its
// deadline or be mistaken for a mesh without instances. It runs once the
// call's broker is chosen (chooseBroker), so an outage of one broker does
// not refuse calls split onto another.
func (a *Ambassador) requireBroker(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		if !c.lane.up() {
			return brokerDown(c.lane)
		}
		return next(ctx, c)
	}
}

// brokerDown is the error of a call whose broker connection is down.
func brokerDown(l *lane) error {
	if l.name == primaryLane {
		return reason.Errorf(reason.BrokerUnavailable, "the sidecar's connection to the broker is down; it is reconnecting")
	}
	return reason.Errorf(reason.BrokerUnavailable, "the sidecar's connection to broker %s is down; it is reconnecting", l.name)
}

// chooseBroker sets the broker a call goes over, by its service's brokers
// weights; without any, the sidecar's own.
func (a *Ambassador) chooseBroker(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		if t := c.Route.traffic; t != nil {
			t.chooseLane(c)
		}
		return next(ctx, c)
	}
}
