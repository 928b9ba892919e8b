// Package tracing tests that a trace crosses the mesh: an ambassador and
// an adapter in one process, on an embedded NATS server, with an
// application that makes spans of its own, all recording into one
// in-memory exporter.
package tracing

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/busmesh/busmesh/adapter"
	"github.com/busmesh/busmesh/ambassador"
	"github.com/busmesh/busmesh/broker"
	bnats "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/telemetry"
	"github.com/busmesh/busmesh/test/testpb"
)

// world is a mesh in one process whose spans land in spans.
type world struct {
	spans *tracetest.InMemoryExporter
	tp    *sdktrace.TracerProvider
	http  string // the ambassador's shared HTTP port
	grpc  string // the ambassador's gRPC port
}

func start(t *testing.T, target string, grpcApp bool) *world {
	t.Helper()
	// Subscriptions last as long as the context they were made with: the
	// test's.
	ctx := t.Context()
	srv, err := bnats.StartServer("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	w := &world{spans: tracetest.NewInMemoryExporter()}
	w.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(w.spans))
	tracer := telemetry.NewTracerFrom(w.tp, "nats")
	open := func() broker.Broker {
		b, err := broker.Open(ctx, srv.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}

	acfg := config.NewAdapter()
	acfg.Service, acfg.Instance, acfg.Target = "orders", "orders-1", target
	if grpcApp {
		acfg.Target = "grpc://" + target
	}
	ad, err := adapter.New(adapter.Options{Config: acfg, Sidecar: "callee", Broker: open(), Tracer: tracer})
	if err != nil {
		t.Fatal(err)
	}
	if err := ad.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ad.Shutdown(context.Background()) })

	mcfg := config.NewAmbassador()
	mcfg.Service, mcfg.HTTP, mcfg.GRPC = "web", "127.0.0.1:0", "127.0.0.1:0"
	amb, err := ambassador.New(ctx, ambassador.Options{Config: mcfg, Sidecar: "caller", Broker: open(), Tracer: tracer})
	if err != nil {
		t.Fatal(err)
	}
	if err := amb.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { amb.Shutdown(context.Background()) })
	w.http, w.grpc = amb.Addrs()[0], amb.GRPCAddr()
	return w
}

// span returns the one ended span of the given kind and name. The
// sidecars end their spans as a call ends there, a moment after its caller
// had the answer (the adapter's once the answer's tail is sent): it waits
// for one up to 5s.
func (w *world) span(t *testing.T, kind trace.SpanKind, name string) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		found = found[:0]
		for _, s := range w.spans.GetSpans() {
			if s.SpanKind == kind && s.Name == name {
				found = append(found, s)
			}
		}
		if len(found) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d %v spans named %q, want 1; all: %v", len(found), kind, name, names(w.spans.GetSpans()))
	}
	return found[0]
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.SpanKind.String()+" "+s.Name)
	}
	return out
}

// checkChain checks caller → ambassador span → adapter span → app span:
// one trace, each the parent of the next.
func checkChain(t *testing.T, caller trace.SpanContext, amb, ad, app tracetest.SpanStub) {
	t.Helper()
	id := amb.SpanContext.TraceID()
	if caller.IsValid() && id != caller.TraceID() {
		t.Errorf("ambassador span trace id %s, want the caller's %s", id, caller.TraceID())
	}
	if caller.IsValid() && amb.Parent.SpanID() != caller.SpanID() {
		t.Errorf("ambassador span parent %s, want the caller's span %s", amb.Parent.SpanID(), caller.SpanID())
	}
	for _, s := range []tracetest.SpanStub{ad, app} {
		if s.SpanContext.TraceID() != id {
			t.Errorf("%s span trace id %s, want %s: one trace from caller to app", s.Name, s.SpanContext.TraceID(), id)
		}
	}
	if ad.Parent.SpanID() != amb.SpanContext.SpanID() || !ad.Parent.IsRemote() {
		t.Errorf("adapter span parent %s (remote %v), want the ambassador span %s across the broker",
			ad.Parent.SpanID(), ad.Parent.IsRemote(), amb.SpanContext.SpanID())
	}
	if app.Parent.SpanID() != ad.SpanContext.SpanID() {
		t.Errorf("app span parent %s, want the adapter span %s", app.Parent.SpanID(), ad.SpanContext.SpanID())
	}
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

func TestHTTPTrace(t *testing.T) {
	var w *world
	app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		_, span := w.tp.Tracer("app").Start(ctx, "app", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if r.URL.Path == "/fail" {
			rw.WriteHeader(http.StatusInternalServerError)
			return
		}
		io.WriteString(rw, "ok")
	}))
	t.Cleanup(app.Close)
	w = start(t, app.URL, false)

	// The caller's own span, whose context it sends in traceparent.
	ctx, callerSpan := w.tp.Tracer("caller").Start(t.Context(), "caller")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.http+"/orders/7?x=1", nil)
	req.Host = "orders"
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	callerSpan.End()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	amb, ad, appSpan := w.span(t, trace.SpanKindClient, "GET"), w.span(t, trace.SpanKindServer, "GET"), w.span(t, trace.SpanKindServer, "app")
	checkChain(t, callerSpan.SpanContext(), amb, ad, appSpan)
	for _, c := range []struct{ span, key, want string }{
		{"ambassador", "messaging.system", "nats"},
		{"ambassador", "http.request.method", "GET"},
		{"ambassador", "url.path", "/orders/7"},
		{"ambassador", "http.response.status_code", "200"},
		{"ambassador", "busmesh.instance", "orders-1"},
		{"ambassador", "messaging.destination.name", "busmesh.default.svc.orders"},
		{"adapter", "busmesh.caller", "web"},
		{"adapter", "busmesh.instance", "orders-1"},
		{"adapter", "messaging.operation.type", "process"},
	} {
		s := amb
		if c.span == "adapter" {
			s = ad
		}
		if got := attr(s, c.key); got != c.want {
			t.Errorf("%s span %s = %q, want %q", c.span, c.key, got, c.want)
		}
	}

	// A call that fails on the mesh's side: a service nobody serves.
	w.spans.Reset()
	req, _ = http.NewRequest(http.MethodGet, "http://"+w.http+"/", nil)
	req.Host = "nobody"
	req.Header.Set("X-Busmesh-Timeout", "300ms")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	failed := w.span(t, trace.SpanKindClient, "GET")
	if failed.Status.Code != codes.Error {
		t.Errorf("span of a call the mesh failed (%d): status %v, want Error", resp.StatusCode, failed.Status)
	}
	if len(failed.Events) == 0 || failed.Events[0].Name != "busmesh.mesh_error" {
		t.Errorf("span of a call the mesh failed: events %v, want busmesh.mesh_error", failed.Events)
	}
	if got := attr(failed, "error.type"); got != "no-responders" && got != "timeout" {
		t.Errorf("error.type = %q, want the mesh's reason (no-responders)", got)
	}
}

// TestGRPCStreamTrace: a bidirectional stream is one trace from the caller
// to the application, its spans lasting the whole stream.
func TestGRPCStreamTrace(t *testing.T) {
	var w *world
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The application's own span of every call, from the traceparent it
	// is given.
	srv := grpc.NewServer(grpc.StreamInterceptor(func(s any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		md, _ := metadata.FromIncomingContext(ss.Context())
		ctx := propagation.TraceContext{}.Extract(ss.Context(), propagation.HeaderCarrier(httpHeader(md)))
		_, span := w.tp.Tracer("app").Start(ctx, "app "+info.FullMethod, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		return h(s, ss)
	}))
	testpb.RegisterEchoServer(srv, testpb.Server{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	w = start(t, lis.Addr().String(), true)

	conn, err := grpc.NewClient(w.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, callerSpan := w.tp.Tracer("caller").Start(t.Context(), "caller")
	md := metadata.MD{}
	propagation.TraceContext{}.Inject(ctx, metadataCarrier(md))
	ctx = metadata.NewOutgoingContext(ctx, md)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := testpb.NewEchoClient(conn).Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(3) {
		if err := stream.Send(&testpb.EchoRequest{Sequence: i}); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("Recv at the end = %v, want EOF", err)
	}
	callerSpan.End()
	const method = "busmesh.test.v1.Echo/Bidi"
	// The sidecars end their spans as the call ends, a moment after the
	// caller saw its end.
	deadline := time.Now().Add(5 * time.Second)
	for len(w.spans.GetSpans()) < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	amb, ad, app := w.span(t, trace.SpanKindClient, method), w.span(t, trace.SpanKindServer, method),
		w.span(t, trace.SpanKindServer, "app /"+method)
	checkChain(t, callerSpan.SpanContext(), amb, ad, app)
	if got := attr(amb, "rpc.response.status_code"); got != "OK" {
		t.Errorf("ambassador span rpc.response.status_code = %q, want OK", got)
	}
	if got := attr(ad, "rpc.system.name"); got != "grpc" {
		t.Errorf("adapter span rpc.system.name = %q, want grpc", got)
	}
	if amb.EndTime.Before(app.EndTime) {
		t.Errorf("ambassador span ended at %v, before the app's (%v): it must cover the whole stream", amb.EndTime, app.EndTime)
	}
}

// TestNewTrace: a caller that sends no traceparent gets a trace started
// by the ambassador, which the application continues.
func TestNewTrace(t *testing.T) {
	var w *world
	var got string
	app := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Traceparent")
	}))
	t.Cleanup(app.Close)
	w = start(t, app.URL, false)
	req, _ := http.NewRequest(http.MethodGet, "http://"+w.http+"/", nil)
	req.Host = "orders"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	amb, ad := w.span(t, trace.SpanKindClient, "GET"), w.span(t, trace.SpanKindServer, "GET")
	if amb.Parent.IsValid() {
		t.Errorf("ambassador span has parent %v, want a new trace", amb.Parent)
	}
	want := "00-" + ad.SpanContext.TraceID().String() + "-" + ad.SpanContext.SpanID().String() + "-01"
	if got != want {
		t.Errorf("the app got traceparent %q, want the adapter span's %q", got, want)
	}
}

func httpHeader(md metadata.MD) http.Header {
	h := http.Header{}
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	return h
}

// metadataCarrier carries trace context in gRPC metadata.
type metadataCarrier metadata.MD

func (m metadataCarrier) Get(key string) string {
	if v := metadata.MD(m).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m metadataCarrier) Set(key, value string) { metadata.MD(m).Set(key, value) }

func (m metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
