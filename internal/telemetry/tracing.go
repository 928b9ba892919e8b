package telemetry

import (
	"context"
	"fmt"
	"net/url"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// TracingOptions configure a sidecar's Tracer.
type TracingOptions struct {
	// Endpoint is the OTLP collector's URL; empty turns tracing off.
	Endpoint string
	// Protocol is grpc or http.
	Protocol string
	// Sampler is one of config's samplers; Ratio its share of traces.
	Sampler string
	Ratio   float64
	// Service and Instance name the sidecar in its spans' resource.
	Service, Instance string
	// System is the messaging system of the broker: nats, kafka, rabbitmq.
	System string
}

// Tracer makes the spans of the calls a sidecar carries and carries their
// W3C trace context (traceparent, tracestate) in envelopes. A nil *Tracer
// is tracing off: the sidecars then leave their call path as it is.
type Tracer struct {
	tracer   trace.Tracer
	prop     propagation.TraceContext
	system   attribute.KeyValue
	shutdown func(context.Context) error
}

// tracerName is the instrumentation scope of busmesh's spans.
const tracerName = "github.com/busmesh/busmesh"

// NewTracer returns the Tracer o describes, exporting over OTLP in batches,
// or nil when o names no endpoint. Shutdown flushes and stops it.
func NewTracer(ctx context.Context, o TracingOptions) (*Tracer, error) {
	if o.Endpoint == "" {
		return nil, nil
	}
	var exp sdktrace.SpanExporter
	var err error
	switch o.Protocol {
	case "http":
		endpoint := o.Endpoint
		if u, perr := url.Parse(endpoint); perr == nil && (u.Path == "" || u.Path == "/") {
			endpoint = u.JoinPath("/v1/traces").String()
		}
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	default:
		exp, err = otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(o.Endpoint))
	}
	if err != nil {
		return nil, fmt.Errorf("tracing exporter %s: %w", o.Endpoint, err)
	}
	service := o.Service
	if service == "" {
		service = "busmesh"
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(Sampler(o.Sampler, o.Ratio)),
		sdktrace.WithResource(resource.NewWithAttributes(semconv.SchemaURL,
			semconv.ServiceName(service), semconv.ServiceInstanceID(o.Instance))),
	)
	t := NewTracerFrom(tp, o.System)
	t.shutdown = tp.Shutdown
	return t, nil
}

// Sampler returns the sampler a config names, with ratio its share of
// traces; an unknown name is the default, parentbased_traceidratio.
func Sampler(name string, ratio float64) sdktrace.Sampler {
	switch name {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(ratio)
	}
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// NewTracerFrom returns a Tracer whose spans come from tp (tests give an
// SDK provider with an in-memory exporter). system is the broker's
// messaging system.
func NewTracerFrom(tp trace.TracerProvider, system string) *Tracer {
	return &Tracer{
		tracer:   tp.Tracer(tracerName),
		system:   semconv.MessagingSystemKey.String(system),
		shutdown: func(context.Context) error { return nil },
	}
}

// Shutdown exports what is buffered and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// System is the messaging.system attribute of the Tracer's spans.
func (t *Tracer) System() attribute.KeyValue { return t.system }

// Start starts a span of the given kind as a child of the W3C trace
// context traceparent and tracestate carry (a new trace when they carry
// none, or garbage).
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, traceparent, tracestate string,
	attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if traceparent != "" {
		ctx = t.prop.Extract(ctx, &traceContext{parent: traceparent, state: tracestate})
	}
	if len(attrs) == 0 {
		return t.tracer.Start(ctx, name, trace.WithSpanKind(kind))
	}
	return t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Context returns the W3C traceparent and tracestate of span, to carry in
// an envelope or hand to an application.
func (t *Tracer) Context(span trace.Span) (traceparent, tracestate string) {
	c := &traceContext{}
	t.prop.Inject(trace.ContextWithSpan(context.Background(), span), c)
	return c.parent, c.state
}

// traceContext is a propagation.TextMapCarrier over the two W3C fields an
// envelope carries.
type traceContext struct{ parent, state string }

func (c *traceContext) Get(key string) string {
	switch key {
	case "traceparent":
		return c.parent
	case "tracestate":
		return c.state
	}
	return ""
}

func (c *traceContext) Set(key, value string) {
	switch key {
	case "traceparent":
		c.parent = value
	case "tracestate":
		c.state = value
	}
}

func (c *traceContext) Keys() []string { return []string{"traceparent", "tracestate"} }
