package adapter

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestTracedServerSpan: the adapter's span is a child of the span the
// envelope names, and the application gets the adapter span's context.
func TestTracedServerSpan(t *testing.T) {
	got := make(chan string, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer app.Close()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "orders-1", app.URL
	sink := &sinkBroker{answers: make(chan string, 16)}
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: sink, Tracer: telemetry.NewTracerFrom(tp, "kafka")})
	if err != nil {
		t.Fatal(err)
	}
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, path := range []string{"/ok", "/fail"} {
		spans.Reset()
		a.serve(&envelope.Request{ID: 1, Source: "caller", SourceService: "web", Service: "orders", Method: "GET",
			Path: path + "?q=1", ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP,
			Deadline: time.Now().Add(5 * time.Second).UnixNano(), TraceParent: parent})
		s := spans.GetSpans()
		if len(s) != 1 {
			t.Fatalf("%s: %d spans, want 1", path, len(s))
		}
		span := s[0]
		if span.SpanKind != trace.SpanKindServer || span.Parent.SpanID().String() != "00f067aa0ba902b7" || !span.Parent.IsRemote() ||
			span.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("%s: span %v, parent %v: want a server span, child of the envelope's", path, span.SpanKind, span.Parent)
		}
		want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + span.SpanContext.SpanID().String() + "-01"
		if tp := <-got; tp != want {
			t.Errorf("%s: the app got traceparent %q, want the adapter span's %q", path, tp, want)
		}
		attrs := map[string]string{}
		for _, kv := range span.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		for k, v := range map[string]string{"messaging.system": "kafka", "url.path": path, "busmesh.caller": "web",
			"busmesh.instance": "orders-1", "messaging.destination.name": "busmesh.default.svc.orders"} {
			if attrs[k] != v {
				t.Errorf("%s: span %s = %q, want %q", path, k, attrs[k], v)
			}
		}
		if failed := span.Status.Code == otelcodes.Error; failed != (path == "/fail") {
			t.Errorf("%s: span status %v", path, span.Status)
		}
	}
}

// TestTracingOffPassesContext: tracing off, the application gets the
// envelope's trace context as it came.
func TestTracingOffPassesContext(t *testing.T) {
	got := make(chan string, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Traceparent")
	}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "orders-1", app.URL
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: &sinkBroker{answers: make(chan string, 16)}})
	if err != nil {
		t.Fatal(err)
	}
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	a.serve(&envelope.Request{ID: 1, Source: "caller", Service: "orders", Method: "GET", Path: "/",
		ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP, TraceParent: parent})
	if tp := <-got; tp != parent {
		t.Errorf("the app got traceparent %q, want %q", tp, parent)
	}
}
