package ambassador

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

// traced is the tracing middleware: it continues the caller's W3C trace
// context (the traceparent and tracestate the listener copied into the
// request) or starts a trace, makes a client span of the call, and sends
// the span's context in the envelope, so that the adapter's span is its
// child. The span ends with the call, whatever became of it: mesh errors
// and 5xx answers set its status, retries add events. It is in the
// pipeline only when tracing is on.
func (a *Ambassador) traced(next Invoker) Invoker {
	return func(ctx context.Context, c *Call) error {
		req := &c.Req
		name := req.Method
		if req.Protocol == envelope.ProtocolGRPC {
			name = strings.TrimPrefix(req.Method, "/")
		}
		ctx, span := a.tracer.Start(ctx, name, trace.SpanKindClient, req.TraceParent, req.TraceState)
		req.TraceParent, req.TraceState = a.tracer.Context(span)
		if !span.IsRecording() { // not sampled: the context travels, nothing more
			return next(ctx, c)
		}
		span.SetAttributes(a.spanAttributes(c)...)
		c.OnEnd(func(o *Outcome) { endSpan(span, c, o) })
		return next(ctx, c)
	}
}

// spanAttributes are the attributes of a call's span, by the semantic
// conventions of HTTP or RPC, and of messaging.
func (a *Ambassador) spanAttributes(c *Call) []attribute.KeyValue {
	req := &c.Req
	attrs := make([]attribute.KeyValue, 0, 10)
	if req.Protocol == envelope.ProtocolGRPC {
		service, method := splitGRPCMethod(req.Method)
		attrs = append(attrs, semconv.RPCSystemNameGRPC, semconv.RPCMethod(strings.TrimPrefix(req.Method, "/")),
			attribute.String("rpc.service", service), attribute.String("rpc.method.name", method))
	} else {
		path, _, _ := strings.Cut(req.Path, "?")
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(req.Method), semconv.URLPath(path),
			semconv.ServerAddress(req.Host))
	}
	return append(attrs, a.tracer.System(), semconv.MessagingOperationTypeSend,
		semconv.MessagingDestinationName(c.Route.Subject),
		attribute.String("busmesh.caller", a.labels.caller), attribute.String("busmesh.service", c.Route.Service))
}

// endSpan sets what the outcome says on the call's span and ends it.
func endSpan(span trace.Span, c *Call, o *Outcome) {
	if inst := c.p.resp.Instance; inst != "" {
		span.SetAttributes(attribute.String("busmesh.instance", inst))
	}
	failed := false
	if o.GRPC {
		span.SetAttributes(semconv.RPCResponseStatusCode(o.Code.String()))
		failed = telemetry.Class(o.Status, true, o.Code) == "5xx"
	} else {
		span.SetAttributes(semconv.HTTPResponseStatusCode(o.Status))
		failed = o.Status >= 500
	}
	if o.Reason != reason.None {
		text := o.ReasonText
		if text == "" {
			text = o.Reason.String()
		}
		span.AddEvent("busmesh.mesh_error", trace.WithAttributes(attribute.String("busmesh.reason", text)))
		span.SetAttributes(semconv.ErrorTypeKey.String(text))
		span.SetStatus(otelcodes.Error, text)
	} else if failed {
		span.SetStatus(otelcodes.Error, "")
	}
	span.End()
}

// splitGRPCMethod splits "/pkg.Service/Method" into its service and method.
func splitGRPCMethod(full string) (service, method string) {
	service, method, _ = strings.Cut(strings.TrimPrefix(full, "/"), "/")
	return service, method
}
