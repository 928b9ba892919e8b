package ambassador

import (
	"bytes"
	"context"
	"io"
	"net/http"
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
			a := tracingAmbassador(b, tp)
			h := a.Handler("orders")
			body := bytes.Repeat([]byte("x"), 128)
			rd := bytes.NewReader(body)
			req, _ := http.NewRequest("POST", "http://127.0.0.1:9001/orders/7?x=1", io.NopCloser(rd))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			req.ContentLength = int64(len(body))
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				clear(w.h)
				h.ServeHTTP(w, req)
				if w.status != 200 {
					b.Fatalf("status %d", w.status)
				}
			}
		})
	}
}
