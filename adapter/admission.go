package adapter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
)

// admission is one check of a request after it is decoded and before a
// worker takes it: nil admits the request; a rejection drops it, counted
// by reason, without costing a worker or an application call. The checks
// run in order (see New): later ones (credentials, authorization, load
// shedding) go into the same chain.
type admission func(req *envelope.Request, env *envelope.Envelope) *rejection

// rejection says why a request is not served.
type rejection struct {
	reason string // the envelopes_rejected_total label
	err    error
}

// handleRequest takes one call off the service or instance subject. It
// blocks while every worker is busy, so the broker holds the rest.
func (a *Adapter) handleRequest(ctx context.Context, data []byte) {
	env, err := envelope.Open(data)
	if err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	if env.Kind != envelope.KindRequest {
		a.reject("unexpected-kind", len(data), fmt.Errorf("a %s on the service subject", env.Kind))
		return
	}
	req := new(envelope.Request)
	if err := req.Unmarshal(env.Msg); err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	for _, check := range a.admit {
		if r := check(req, &env); r != nil {
			a.reject(r.reason, len(data), r.err)
			return
		}
	}
	a.pool.dispatch(ctx, req)
}

// forThisService admits requests for the adapter's own service only.
func (a *Adapter) forThisService(req *envelope.Request, _ *envelope.Envelope) *rejection {
	if req.Service != a.cfg.Service {
		return &rejection{"wrong-service", fmt.Errorf("request for service %q", req.Service)}
	}
	return nil
}

// addressed admits requests that say who sent them and where to answer.
func addressed(req *envelope.Request, _ *envelope.Envelope) *rejection {
	if req.ReplyTo == "" || req.Source == "" {
		return &rejection{"malformed", errors.New("request without reply_to or source")}
	}
	return nil
}

// fresh drops a request whose caller has already given up: serving it
// would be wasted work.
func fresh(req *envelope.Request, _ *envelope.Envelope) *rejection {
	if req.Deadline != 0 && time.Now().UnixNano() >= req.Deadline {
		return &rejection{"expired", errors.New("deadline passed before the call was taken")}
	}
	return nil
}
