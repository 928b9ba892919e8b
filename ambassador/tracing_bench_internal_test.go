package ambassador

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// discardExporter drops the spans it is given: what remains is the cost
// of making them.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// BenchmarkAmbassadorHTTPTracing is BenchmarkAmbassadorHTTP with tracing
// off, on with every trace sampled (ratio 1, spans batched to an exporter
// that drops them), and on with none sampled (ratio 0): the cost of
// tracing per call. The caller sends a traceparent, as a traced
// application would.
func BenchmarkAmbassadorHTTPTracing(b *testing.B) {
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{
		{"off", nil},
		{"ratio=1", sdktrace.ParentBased(sdktrace.TraceIDRatioBased(1))},
		{"ratio=0", sdktrace.TraceIDRatioBased(0)},
	} {
		b.Run(c.name, func(b *testing.B) {
			var tp *sdktrace.TracerProvider
			if c.sampler != nil {
				tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(c.sampler), sdktrace.WithBatcher(discardExporter{}))
				b.Cleanup(func() { tp.Shutdown(context.Background()) })
			}
			benchHTTP(b, tracingAmbassador(b, tp), "Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		})
	}
}
