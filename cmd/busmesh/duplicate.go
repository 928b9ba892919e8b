package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// duplicateError is another sidecar on the broker serving the instance this
// one is about to serve, or using its sidecar id.
type duplicateError struct {
	mesh, service, instance string
	other                   string // the other sidecar's id
	sameID                  bool   // the other uses this sidecar's id
	fix                     string
}

func (e *duplicateError) Error() string {
	what := fmt.Sprintf("instance %q of service %q is already served on this broker (mesh %q) by sidecar %q",
		e.instance, e.service, e.mesh, e.other)
	if e.sameID {
		what = fmt.Sprintf("sidecar id %q is already in use on this broker (mesh %q; it serves instance %q of %q)",
			e.other, e.mesh, e.instance, e.service)
	}
	return what + ": two of them would take each other's calls and answers\n  try: " + e.fix
}

// findDuplicate asks the service's adapters to announce themselves and
// waits settle for an answer from another sidecar serving service/instance,
// or using sidecar id. Call it before this sidecar's adapter starts, so that
// every answer is someone else's. nil means none answered.
func findDuplicate(ctx context.Context, b broker.Broker, mesh, sidecar, service, instance string, settle time.Duration) (*duplicateError, error) {
	subjects := broker.NewSubjects(mesh)
	found := make(chan *duplicateError, 1)
	handle := func(_ context.Context, data []byte) {
		var a busmeshv1.Announcement
		if proto.Unmarshal(data, &a) != nil || a.Kind != busmeshv1.Announcement_KIND_HELLO || a.Service != service {
			return
		}
		var d *duplicateError
		switch {
		case a.Instance == instance:
			d = &duplicateError{mesh: mesh, service: service, instance: instance, other: a.Sidecar}
		case a.Sidecar == sidecar:
			d = &duplicateError{mesh: mesh, service: a.Service, instance: a.Instance, other: a.Sidecar, sameID: true}
		default:
			return
		}
		select {
		case found <- d:
		default:
		}
	}
	// The answers to the ping come to an inbox of this check's own; hellos
	// sent meanwhile on the service's subject count too.
	inbox := subjects.DiscoveryInbox(sidecar + "-start") // stable: no new Kafka topic per start
	var subs []broker.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe() // a check's subscription; nothing to do about a failure
		}
	}()
	for _, subject := range []string{inbox, subjects.Discovery(service)} {
		sub, err := b.Subscribe(ctx, subject, handle)
		if err != nil {
			return nil, fmt.Errorf("duplicate check: %w", err)
		}
		subs = append(subs, sub)
	}
	ping, _ := proto.Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_PING, Service: service, ReplyTo: inbox})
	if err := b.Publish(ctx, subjects.DiscoveryPing(service), ping); err != nil {
		return nil, fmt.Errorf("duplicate check: %w", err)
	}
	t := time.NewTimer(settle)
	defer t.Stop()
	select {
	case d := <-found:
		return d, nil
	case <-t.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
