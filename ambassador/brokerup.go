package ambassador

import (
	"context"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/reason"
)

// requireBroker answers a call broker-unavailable at once while the
// sidecar's own connection to the broker is down (on a backend that can
// tell), instead of letting it wait in a reconnect buffer until its
// deadline or be mistaken for a mesh without instances.
func (a *Ambassador) requireBroker(next Invoker) Invoker {
	b := a.pub.Broker()
	if _, ok := b.(broker.Connectivity); !ok {
		return next
	}
	return func(ctx context.Context, c *Call) error {
		if !broker.Connected(b) {
			return reason.Errorf(reason.BrokerUnavailable, "the sidecar's connection to the broker is down; it is reconnecting")
		}
		return next(ctx, c)
	}
}
