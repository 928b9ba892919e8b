package adapter

import (
	"context"
	"fmt"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/secure"
)

// open decodes an envelope taken off the bus and, with security on,
// authenticates it (secure.Guard.Open: certificate, MAC, freshness,
// replay, addressed to this sidecar). On error, why is the
// envelopes_rejected_total label.
func (a *Adapter) open(data []byte) (env envelope.Envelope, from secure.Sender, why string, err error) {
	if a.guard == nil {
		if env, err = envelope.Open(data); err != nil {
			return env, from, "malformed", err
		}
		return env, from, "", nil
	}
	if env, from, err = a.guard.Open(data); err != nil {
		return env, from, secure.Reason(err), err
	}
	return env, from, "", nil
}

// authenticated admits, with security on, a request whose caller's
// certificate names the service the request says it comes from, and seals
// what the adapter sends to the request's reply_to for that service with
// the keys the caller used (the binding is the service's: another service
// naming the same reply_to cannot take it over).
func (a *Adapter) authenticated(req *envelope.Request, _ *envelope.Envelope, from secure.Sender) *rejection {
	if a.guard == nil {
		return nil
	}
	if a.cfg.Seal && !from.Sealed {
		return &rejection{reason: "unsealed", err: fmt.Errorf("%s requires sealed requests (adapter.seal); %s sent one in the clear", a.cfg.Service, from.Peer.Service())}
	}
	if req.SourceService != from.Peer.Service() {
		return &rejection{reason: "wrong-source", err: fmt.Errorf("source_service %q sent with a certificate of %q", req.SourceService, from.Peer.Service())}
	}
	a.guard.Bind(req.ReplyTo, from)
	return nil
}

// forPeer returns ctx sealing, with security on, for the service of
// req's caller only (secure.ForPeer).
func (a *Adapter) forPeer(ctx context.Context, req *envelope.Request) context.Context {
	if a.guard == nil {
		return ctx
	}
	return secure.ForPeer(ctx, &req.SourceService)
}
