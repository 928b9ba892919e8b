package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// collector is an OTLP receiver over gRPC and HTTP keeping what the
// sidecars export.
type collector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
	names map[*tracepb.Span]string // the service.name of each span's resource
}

func (c *collector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	c.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *collector) add(req *collectortrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				c.spans = append(c.spans, s)
				c.names[s] = service
			}
		}
	}
}

// find returns the span of a service with the given kind, nil if none yet.
func (c *collector) find(service string, kind tracepb.Span_SpanKind) *tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.spans {
		if c.names[s] == service && s.Kind == kind {
			return s
		}
	}
	return nil
}

// startCollector serves OTLP over gRPC and over HTTP (/v1/traces).
func startCollector(t *testing.T) (c *collector, grpcURL, httpURL string) {
	t.Helper()
	c = &collector{names: map[*tracepb.Span]string{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, c)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
			http.Error(w, "bad export", http.StatusBadRequest)
			return
		}
		c.add(&req)
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	t.Cleanup(h.Close)
	return c, "http://" + ln.Addr().String(), h.URL
}

const tracedCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
log:
  access:
    enabled: true
ambassador:
  service: caller
  upstreams:
    {{service}}: {{port}}
tracing:
  endpoint: {{collector}}
  protocol: grpc
`

const tracedCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
log:
  access:
    enabled: true
    sample: 1
adapter:
  service: {{service}}
  instance: {{service}}-1
  target: {{target}}
tracing:
  endpoint: {{collector}}
  protocol: http
  sampler: parentbased_traceidratio
  ratio: 0
`

// TestTracingAcrossProcesses: sidecar processes export their spans over
// OTLP (the caller's over gRPC, the callee's over HTTP): one trace from
// the caller's span through the ambassador's and the adapter's to the
// application's own, on every broker. The callee samples no new traces
// (ratio 0) but follows the caller's decision.
func TestTracingAcrossProcesses(t *testing.T) {
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export every 100ms, not 5s
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			col, grpcURL, httpURL := startCollector(t)
			appSpans := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(appSpans))
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
				_, span := tp.Tracer("app").Start(ctx, "app", trace.WithSpanKind(trace.SpanKindServer))
				span.End()
				io.WriteString(w, "ok")
			}))
			t.Cleanup(app.Close)
			service := unique("traced")
			callee := startSidecar(t, "traced-callee", tracedCalleeConfig, map[string]string{
				"id": unique("tcallee"), "broker": b.url, "service": service, "target": app.URL, "collector": httpURL,
			})
			port := freePort(t)
			caller := startSidecar(t, "traced-caller", tracedCallerConfig, map[string]string{
				"id": unique("tcaller"), "broker": b.url, "service": service, "port": port,
				"collector": grpcURL,
			})
			ctx, callerSpan := tp.Tracer("caller").Start(t.Context(), "caller")
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+port+"/orders", nil)
			propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
			var resp *http.Response
			eventually(t, 15*time.Second, "a call through the mesh", func() bool {
				var err error
				resp, err = http.DefaultClient.Do(req)
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			})
			callerSpan.End()
			var amb, ad *tracepb.Span
			eventually(t, 10*time.Second, "the sidecars' spans at the collector", func() bool {
				amb, ad = col.find("caller", tracepb.Span_SPAN_KIND_CLIENT), col.find(service, tracepb.Span_SPAN_KIND_SERVER)
				return amb != nil && ad != nil
			})
			traceID := callerSpan.SpanContext().TraceID()
			hexID := func(b []byte) string { return hex.EncodeToString(b) }
			if hexID(amb.TraceId) != traceID.String() || hexID(ad.TraceId) != traceID.String() {
				t.Errorf("trace ids: caller %s, ambassador %s, adapter %s: want one trace", traceID, hexID(amb.TraceId), hexID(ad.TraceId))
			}
			if hexID(amb.ParentSpanId) != callerSpan.SpanContext().SpanID().String() {
				t.Errorf("ambassador span parent %s, want the caller's span %s", hexID(amb.ParentSpanId), callerSpan.SpanContext().SpanID())
			}
			if hexID(ad.ParentSpanId) != hexID(amb.SpanId) {
				t.Errorf("adapter span parent %s, want the ambassador's span %s", hexID(ad.ParentSpanId), hexID(amb.SpanId))
			}
			var appSpan tracetest.SpanStub
			for _, s := range appSpans.GetSpans() {
				if s.Name == "app" {
					appSpan = s
				}
			}
			if appSpan.Parent.SpanID().String() != hexID(ad.SpanId) || appSpan.SpanContext.TraceID() != traceID {
				t.Errorf("app span parent %s in trace %s, want the adapter's span %s in %s",
					appSpan.Parent.SpanID(), appSpan.SpanContext.TraceID(), hexID(ad.SpanId), traceID)
			}
			// Each side's access log line of the call carries the trace id.
			for _, c := range []struct {
				side *sidecar
				want map[string]any
			}{
				{caller, map[string]any{"side": "ambassador", "caller": "caller", "service": service, "instance": service + "-1",
					"method": "GET", "path": "/orders", "status": 200.0, "bytes_out": 2.0, "broker": b.name}},
				{callee, map[string]any{"side": "adapter", "caller": "caller", "service": service, "instance": service + "-1",
					"method": "GET", "path": "/orders", "status": 200.0, "bytes_out": 2.0, "broker": b.name}},
			} {
				line := accessLine(t, c.side, traceID.String())
				for k, v := range c.want {
					if line[k] != v {
						t.Errorf("%s access log %s = %v, want %v", c.side.name, k, line[k], v)
					}
				}
			}
			for _, s := range []*tracepb.Span{amb, ad} {
				system := ""
				for _, a := range s.Attributes {
					if a.Key == "messaging.system" {
						system = a.GetValue().GetStringValue()
					}
				}
				if system != b.name {
					t.Errorf("span %s messaging.system = %q, want %q", s.Name, system, b.name)
				}
			}
		})
	}
}

// accessLine returns the sidecar's last access log line of a call in
// trace id that was answered with 200 (calls made before discovery knew
// the service were refused, in the same trace).
func accessLine(t *testing.T, s *sidecar, id string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 5*time.Second, s.name+"'s access log line", func() bool {
		for _, l := range strings.Split(s.log.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "access" && m["trace_id"] == id && m["status"] == 200.0 {
				found = m
			}
		}
		return found != nil
	})
	return found
}
