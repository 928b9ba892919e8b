package adapter

import (
	"fmt"
	"strings"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/policy"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/secure"
)

// The authz_decisions_total verdicts.
const (
	verdictAllow = "allow"
	verdictDeny  = "deny"
)

// authorize admits a request the service's allow rules let its caller
// make; any other is answered 403 / PermissionDenied (forbidden) at once.
// The caller is the service its certificate names, so with security off
// the rules see the request's unproven source_service. Every decision is
// counted; denials are logged, rate-limited.
func (a *Adapter) authorize(req *envelope.Request, _ *envelope.Envelope, from secure.Sender) *rejection {
	if a.policy == nil {
		return nil
	}
	caller := req.SourceService
	if from.Peer != nil {
		caller = from.Peer.Service()
	}
	c := policy.Call{Caller: caller, GRPC: req.Protocol == envelope.ProtocolGRPC, Method: req.Method, Path: req.Path}
	if c.GRPC && c.Path == "" {
		c.Path = req.Method // a gRPC request's method is its full method name
	}
	// The caller label is bounded as the requests' is: without identities
	// it is whatever a request says.
	label := a.callers.Admit(caller)
	if a.policy.Allow(c) {
		a.metrics.AuthzDecisions.WithLabelValues(label, a.cfg.Service, verdictAllow).Inc()
		return nil
	}
	a.metrics.AuthzDecisions.WithLabelValues(label, a.cfg.Service, verdictDeny).Inc()
	if ok, suppressed := a.limiter.Allow(); ok {
		a.logger.Warn("call denied", "caller", caller, "method", req.Method, "path", req.Path,
			"grpc", c.GRPC, "suppressed", suppressed)
	}
	return &rejection{reason: verdictDeny, answer: reason.Forbidden,
		err: fmt.Errorf("%s may not call %s on %s", caller, strings.TrimSpace(req.Method+" "+req.Path), a.cfg.Service)}
}

// deny answers a request the admission chain refused with an answer
// reason, as refuse does for overload: at once, on the mesh's behalf,
// without a worker or the application, counted with the calls served.
func (a *Adapter) deny(req *envelope.Request, r *rejection) {
	sc := &serverCall{a: a, req: req, start: time.Now(), cancel: func() {}}
	a.started(sc)
	ctx, cancel := a.callContext(req)
	defer cancel()
	sc.fail(ctx, r.answer, r.err.Error())
	a.ended(sc)
}
