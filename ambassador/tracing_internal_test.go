package ambassador

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// tracingAmbassador is an ambassador over a loopBroker that answers 200,
// its spans from tp; nil tp is tracing off.
func tracingAmbassador(tb testing.TB, tp *sdktrace.TracerProvider) *Ambassador {
	tb.Helper()
	cfg := config.NewAmbassador()
	cfg.Service = "web"
	lb := &loopBroker{resp: envelope.Response{Status: 200, Instance: "orders-1",
		Headers: []string{"Content-Type", "application/octet-stream"}}}
	o := Options{Config: cfg, Sidecar: "t", Broker: lb}
	if tp != nil {
		o.Tracer = telemetry.NewTracerFrom(tp, "nats")
	}
	a, err := New(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

func recording(spans *tracetest.InMemoryExporter) *sdktrace.TracerProvider {
	return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSyncer(spans))
}

func TestTracedContinuesCallerTrace(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	a := tracingAmbassador(t, recording(spans))
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var sent string
	a.invoke = chain(func(ctx context.Context, c *Call) error {
		sent = c.Req.TraceParent
		c.p.resp = envelope.Response{Status: 200, Instance: "orders-1"}
		return nil
	}, a.traced)
	req, _ := http.NewRequest("GET", "http://orders/a?b=c", nil)
	req.Header.Set("Traceparent", caller)
	w := &discardWriter{h: http.Header{}}
	a.Handler("orders").ServeHTTP(w, req)

	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans, want 1", len(got))
	}
	s := got[0]
	if s.SpanKind != trace.SpanKindClient || s.Parent.SpanID().String() != "00f067aa0ba902b7" ||
		s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("span %v in trace %s, parent %s: want a client span continuing the caller's trace", s.SpanKind,
			s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + s.SpanContext.SpanID().String() + "-01"
	if sent != want {
		t.Errorf("envelope traceparent = %q, want the ambassador span's %q", sent, want)
	}
	if s.Status.Code == otelcodes.Error {
		t.Errorf("span status %v on a 200, want unset", s.Status)
	}
}

func TestTracedMeshError(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	a := tracingAmbassador(t, recording(spans))
	a.invoke = chain(func(ctx context.Context, c *Call) error { return noHealthy(c.Route.Service, "") }, a.traced)
	req, _ := http.NewRequest("POST", "http://orders/", bytes.NewReader([]byte("x")))
	w := &discardWriter{h: http.Header{}}
	a.Handler("orders").ServeHTTP(w, req)
	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans, want 1", len(got))
	}
	s := got[0]
	if s.Status.Code != otelcodes.Error || s.Status.Description != "no-healthy-instances" {
		t.Errorf("span status = %v, want Error no-healthy-instances", s.Status)
	}
	if len(s.Events) != 1 || s.Events[0].Name != "busmesh.mesh_error" {
		t.Errorf("span events = %v, want busmesh.mesh_error", s.Events)
	}
}

// TestTracingOffSendsCallerContext: tracing off, the caller's trace
// context passes through the ambassador as it came.
func TestTracingOffSendsCallerContext(t *testing.T) {
	a := tracingAmbassador(t, nil)
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	var sent string
	a.invoke = chain(func(ctx context.Context, c *Call) error {
		sent = c.Req.TraceParent
		c.p.resp = envelope.Response{Status: 200}
		return nil
	})
	req, _ := http.NewRequest("GET", "http://orders/", io.NopCloser(bytes.NewReader(nil)))
	req.Header.Set("Traceparent", caller)
	a.Handler("orders").ServeHTTP(&discardWriter{h: http.Header{}}, req)
	if sent != caller {
		t.Errorf("envelope traceparent = %q, want the caller's %q", sent, caller)
	}
}

// returningBroker hands back the first request it is given (no
// responders) and answers the next, as loopBroker does.
type returningBroker struct {
	loopBroker
	returnedOnce bool
}

func (r *returningBroker) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	r.mu.Lock()
	first := !r.returnedOnce
	r.returnedOnce = true
	r.mu.Unlock()
	if first {
		go returned(token)
		return nil
	}
	return r.Publish(ctx, subject, data)
}

// TestTracedRetryEvent: a request the broker hands back goes once more, to
// another instance, and the span says so.
func TestTracedRetryEvent(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	cfg := config.NewAmbassador()
	cfg.Service = "web"
	cfg.Services = map[string]*config.ServicePolicy{"orders": {LB: config.LBDirect}}
	reg := discovery.NewRegistry(nil)
	for _, inst := range []string{"orders-1", "orders-2"} {
		reg.Apply(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders", Instance: inst,
			Sidecar: inst, Healthy: true, Concurrency: 8, IntervalMs: 60000})
	}
	b := &returningBroker{loopBroker: loopBroker{resp: envelope.Response{Status: 200, Instance: "orders-2"}}}
	a, err := New(context.Background(), Options{Config: cfg, Sidecar: "t", Broker: b, Registry: reg,
		Tracer: telemetry.NewTracerFrom(recording(spans), "nats")})
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	h := b.inbox
	b.mu.Unlock()
	if h == nil {
		t.Fatal("the ambassador subscribed no inbox")
	}
	w := &discardWriter{h: http.Header{}}
	req, _ := http.NewRequest("GET", "http://orders/", nil)
	a.Handler("orders").ServeHTTP(w, req)
	if w.status != 200 {
		t.Fatalf("status %d, want 200 after the retry", w.status)
	}
	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("%d spans, want 1", len(got))
	}
	if ev := got[0].Events; len(ev) != 1 || ev[0].Name != "busmesh.retry" {
		t.Errorf("span events = %v, want one busmesh.retry", ev)
	}
}
