package secure

import (
	"context"
	"fmt"
	"slices"

	"github.com/busmesh/busmesh/internal/identity"
)

// binding is how envelopes to one subject are sealed for one service: from
// which local identity, for which peer, and whether with the local
// certificate (the peer addressed a rotated-out identity, so it lacks the
// current one).
type binding struct {
	local *identity.Identity
	peer  *identity.Peer
	cert  bool
	seal  bool // the peer sealed what it sent: seal what goes back
}

// bindings are a subject's bindings, one for each service whose verified
// envelope named the subject to answer on. They are kept by service, not
// by subject alone: a reply subject is only a name in an envelope, and a
// service with a valid certificate naming another's inbox must not have
// that one's answers sealed for itself (Bind never replaces another
// service's binding). Copied on write.
type bindings struct {
	by []serviceBinding
}

type serviceBinding struct {
	service string
	b       binding
}

// maxBindingServices bounds the services one subject is bound for: an
// inbox is one sidecar's, and only that sidecar's service answers on it;
// more can only be services naming an inbox not theirs.
const maxBindingServices = 8

// find returns service's binding.
func (bs *bindings) find(service string) (binding, bool) {
	for _, sb := range bs.by {
		if sb.service == service {
			return sb.b, true
		}
	}
	return binding{}, false
}

// with returns a copy of bs with service bound as b, or nil when bs holds
// maxBindingServices others already.
func (bs *bindings) with(service string, b binding) *bindings {
	next := &bindings{by: slices.Clone(bs.by)}
	for i := range next.by {
		if next.by[i].service == service {
			next.by[i].b = b
			return next
		}
	}
	if len(next.by) >= maxBindingServices {
		return nil
	}
	next.by = append(next.by, serviceBinding{service, b})
	return next
}

// pick returns the binding to seal with for the service ctx names
// (ForPeer); with none named, the subject's only binding.
func (bs *bindings) pick(ctx context.Context) (binding, error) {
	if service := peerOf(ctx); service != "" {
		if b, ok := bs.find(service); ok {
			return b, nil
		}
		return binding{}, fmt.Errorf("no verified envelope of %s named it: %w", service, ErrNoReceiver)
	}
	if len(bs.by) == 1 {
		return bs.by[0].b, nil
	}
	return binding{}, fmt.Errorf("named by %d services, and the envelope answers none of them: %w", len(bs.by), ErrNoReceiver)
}

type peerKey struct{}

// ForPeer returns ctx saying that what is published with it goes to
// service, the other side of a call: Seal then seals for the binding that
// service's verified envelope made for the subject (Bind), and no other.
// An adapter publishes the answers, frames and pings of a call with its
// caller's service; an ambassador the frames and cancels of a call with
// the service called. service is taken by address (a string would be
// copied to the heap on every call) and must not change while ctx is in
// use.
func ForPeer(ctx context.Context, service *string) context.Context {
	return context.WithValue(ctx, peerKey{}, service)
}

// peerOf returns the service ForPeer put in ctx, or "".
func peerOf(ctx context.Context) string {
	if s, _ := ctx.Value(peerKey{}).(*string); s != nil {
		return *s
	}
	return ""
}
