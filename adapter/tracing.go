package adapter

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// traced is the adapter's tracing step: a server span of the call, a
// child of the span whose context the envelope carries (the ambassador's),
// and that span's context in the request, so the application gets a
// traceparent naming the adapter's span. Tracing off, it does nothing.
func (a *Adapter) traced(ctx context.Context, sc *serverCall) context.Context {
	if a.tracer == nil {
		return ctx
	}
	req := sc.req
	name := req.Method
	if req.Protocol == envelope.ProtocolGRPC {
		name = strings.TrimPrefix(req.Method, "/")
	}
	ctx, span := a.tracer.Start(ctx, name, trace.SpanKindServer, req.TraceParent, req.TraceState)
	req.TraceParent, req.TraceState = a.tracer.Context(span)
	if !span.IsRecording() { // not sampled: the context travels, nothing more
		return ctx
	}
	span.SetAttributes(a.spanAttributes(req)...)
	sc.span = span
	return ctx
}

// spanAttributes are the attributes of a call's span, by the semantic
// conventions of HTTP or RPC, and of messaging.
func (a *Adapter) spanAttributes(req *envelope.Request) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 12)
	if req.Protocol == envelope.ProtocolGRPC {
		name := strings.TrimPrefix(req.Method, "/")
		service, method, _ := strings.Cut(name, "/")
		attrs = append(attrs, semconv.RPCSystemNameGRPC, semconv.RPCMethod(name),
			attribute.String("rpc.service", service), attribute.String("rpc.method.name", method))
	} else {
		path, _, _ := strings.Cut(req.Path, "?")
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(req.Method), semconv.URLPath(path))
	}
	return append(attrs, a.tracer.System(), semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(a.subjects.Service(a.cfg.Service)),
		attribute.String("busmesh.caller", req.SourceService), attribute.String("busmesh.service", a.cfg.Service),
		attribute.String("busmesh.instance", a.cfg.Instance))
}

// endSpan sets how the call ended on its span and ends it.
func (a *Adapter) endSpan(sc *serverCall) {
	span := sc.span
	if !span.IsRecording() {
		span.End()
		return
	}
	failed := false
	if sc.req.Protocol == envelope.ProtocolGRPC {
		span.SetAttributes(semconv.RPCResponseStatusCode(sc.code.String()))
		failed = telemetry.Class(sc.status, true, sc.code) == "5xx"
	} else {
		span.SetAttributes(semconv.HTTPResponseStatusCode(sc.status))
		failed = sc.status >= 500
	}
	switch {
	case sc.why != reason.None:
		span.AddEvent("busmesh.mesh_error", trace.WithAttributes(attribute.String("busmesh.reason", sc.why.String())))
		span.SetAttributes(semconv.ErrorTypeKey.String(sc.why.String()))
		span.SetStatus(otelcodes.Error, sc.why.String())
	case !sc.answered:
		span.SetStatus(otelcodes.Error, "no answer: the caller went away or its deadline passed")
	case failed:
		span.SetStatus(otelcodes.Error, "")
	}
	span.End()
}
