package ambassador

import (
	"context"
	"errors"
	"fmt"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// shadow is another broker a mirror copies calls to, or a brokers split
// sends calls to: a broker migration canaried like a release. Copies and
// calls go to the same subjects there (the mesh and the service are the
// same). Copies' answers come back to the ambassador's mirror inbox on
// that broker, to be counted and dropped; calls' answers to its inbox
// there, delivered to the caller as the primary's are.
type shadow struct {
	name  string
	b     broker.Broker
	lane  *lane
	out   *mirrorSender
	sub   broker.Subscription // the mirror inbox
	inbox broker.Subscription // the call inbox
}

// newShadows makes a publisher for each of o.Brokers, sealing as the
// sidecar's own does, and its mirror sender. The table compiles against
// them; openShadows subscribes their mirror inboxes.
func newShadows(o Options) map[string]*shadow {
	out := make(map[string]*shadow, len(o.Brokers))
	for name, b := range o.Brokers {
		pub := bus.NewPublisher(b)
		if o.Security != nil {
			pub.SetSealer(o.Security)
		}
		l := newLane(name, pub, o.Registries[name],
			newBalancer(broker.NewSubjects(o.Mesh), o.Logger.With(telemetry.KeyComponent, "ambassador"), o.Metrics.Resilience))
		out[name] = &shadow{name: name, b: b, lane: l,
			out: newMirrorSender(pub, name, o.Metrics, o.Logger.With(telemetry.KeyComponent, "ambassador"))}
	}
	return out
}

// openShadows subscribes the mirror inbox and the call inbox on each
// shadow broker.
func (a *Ambassador) openShadows(ctx context.Context, o Options) error {
	for name, s := range a.shadows {
		sub, err := s.b.Subscribe(ctx, a.mirrorInbox, a.mirrorAnswers(s.out))
		if err != nil {
			_ = a.closeShadows() // the subscribe error is the one to report
			return fmt.Errorf("ambassador mirror inbox on broker %s: %w", name, err)
		}
		s.sub = sub
		if s.inbox, err = s.b.Subscribe(ctx, a.inbox.subject, a.inbox.handlerOn(s.lane.pub)); err != nil {
			_ = a.closeShadows()
			return fmt.Errorf("ambassador inbox on broker %s: %w", name, err)
		}
	}
	return nil
}

// closeShadows ends the mirror inbox subscriptions; the connections are
// the caller's.
func (a *Ambassador) closeShadows() error {
	var errs []error
	for _, s := range a.shadows {
		if s.sub != nil {
			errs = append(errs, s.sub.Unsubscribe())
			s.sub = nil
		}
		if s.inbox != nil {
			errs = append(errs, s.inbox.Unsubscribe())
			s.inbox = nil
		}
	}
	return errors.Join(errs...)
}
