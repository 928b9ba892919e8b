package ambassador

import (
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// logAccess writes the call's access log line, when it is sampled. The
// trace id is the one the call carried to the adapter: the ambassador's
// span's when tracing is on, else the caller's.
func (a *Ambassador) logAccess(c *Call) {
	if !a.access.Sampled() {
		return
	}
	o, req, resp := &c.out, &c.Req, &c.p.resp
	e := telemetry.Access{
		Side:     telemetry.SideAmbassador,
		TraceID:  telemetry.TraceID(req.TraceParent),
		Caller:   a.labels.caller,
		Instance: resp.Instance,
		Method:   req.Method,
		Status:   o.Status,
		Duration: o.Latency,
		BytesIn:  int64(len(req.Body)),
		BytesOut: int64(len(resp.Body)) + c.bytesOut,
		Broker:   a.metrics.Broker,
		Protocol: telemetry.ProtocolHTTP,
		Path:     req.Path,
	}
	if c.Route != nil {
		e.Service = c.Route.Service
	}
	if req.More && c.http.r != nil && c.http.r.ContentLength > 0 {
		e.BytesIn = c.http.r.ContentLength
	}
	if o.GRPC || req.Protocol == envelope.ProtocolGRPC {
		e.Protocol, e.GRPCCode, e.Path = telemetry.ProtocolGRPC, o.Code.String(), ""
	}
	if o.Reason != reason.None {
		e.Reason = o.Reason.String()
	}
	a.access.Log(&e)
}
