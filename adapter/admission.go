package adapter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/secure"
)

// admission is one check of a request after it is decoded (and, with
// security on, authenticated: from is its verified sender) and before a
// worker takes it: nil admits the request; a rejection drops it, counted
// by reason, or answers it at once (authorization), without costing a
// worker or an application call. The checks run in order (see New).
type admission func(req *envelope.Request, env *envelope.Envelope, from secure.Sender) *rejection

// rejection says why a request is not served.
type rejection struct {
	reason string // the envelopes_rejected_total label
	err    error
	// answer, when set, answers the caller with this reason instead of
	// dropping the request (and the request is not counted as rejected).
	answer reason.Reason
}

// handleRequest takes one call off the service or instance subject. It
// does not block: a call that finds every worker busy waits in the
// workers' line or is refused (workers.dispatch).
func (a *Adapter) handleRequest(ctx context.Context, data []byte) {
	env, from, why, err := a.open(data)
	if err != nil {
		a.reject(why, len(data), err)
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
		if r := check(req, &env, from); r != nil {
			if r.answer != reason.None {
				a.deny(req, r)
				return
			}
			a.reject(r.reason, len(data), r.err)
			return
		}
	}
	a.pool.dispatch(ctx, req)
}

// forThisService admits requests for the adapter's own service only.
func (a *Adapter) forThisService(req *envelope.Request, _ *envelope.Envelope, _ secure.Sender) *rejection {
	if req.Service != a.cfg.Service {
		return &rejection{reason: "wrong-service", err: fmt.Errorf("request for service %q", req.Service)}
	}
	return nil
}

// addressed admits requests that say who sent them and where to answer.
func addressed(req *envelope.Request, _ *envelope.Envelope, _ secure.Sender) *rejection {
	if req.ReplyTo == "" || req.Source == "" {
		return &rejection{reason: "malformed", err: errors.New("request without reply_to or source")}
	}
	return nil
}

// originForm admits, for an HTTP application, only a path in origin form
// ("/orders?id=7"), the one form an ambassador sends: the path is appended
// to the target's URL, where anything else could change the host the call
// goes to ("@other.example/x"). "*" (OPTIONS *) passes; it cannot.
func (a *Adapter) originForm(req *envelope.Request, _ *envelope.Envelope, _ secure.Sender) *rejection {
	if a.app.grpc() || strings.HasPrefix(req.Path, "/") || req.Path == "*" {
		return nil
	}
	return &rejection{reason: "malformed", err: fmt.Errorf("a path not in origin form: %.80q", req.Path)}
}

// fresh drops a request whose caller has already given up: serving it
// would be wasted work.
func fresh(req *envelope.Request, _ *envelope.Envelope, _ secure.Sender) *rejection {
	if req.Deadline != 0 && time.Now().UnixNano() >= req.Deadline {
		return &rejection{reason: "expired", err: errors.New("deadline passed before the call was taken")}
	}
	return nil
}
