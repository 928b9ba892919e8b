package adapter

import (
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// logAccess writes the call's access log line, when it is sampled. The
// trace id is the one the application was given.
func (a *Adapter) logAccess(sc *serverCall) {
	if !a.access.Sampled() {
		return
	}
	req := sc.req
	e := telemetry.Access{
		Side:     telemetry.SideAdapter,
		TraceID:  telemetry.TraceID(req.TraceParent),
		Caller:   req.SourceService,
		Service:  a.cfg.Service,
		Instance: a.cfg.Instance,
		Protocol: telemetry.ProtocolHTTP,
		Method:   req.Method,
		Path:     req.Path,
		Status:   sc.status,
		Duration: sc.headIn,
		BytesIn:  int64(len(req.Body)),
		BytesOut: int64(sc.bytesOut),
		Broker:   a.metrics.Broker,
	}
	if req.Protocol == envelope.ProtocolGRPC {
		e.Protocol, e.GRPCCode, e.Path = telemetry.ProtocolGRPC, sc.code.String(), ""
	}
	if sc.why != reason.None {
		e.Reason = sc.why.String()
	}
	a.access.Log(&e)
}
