package adapter

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/busmesh/busmesh/broker"
	bnats "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestNATSServices: on NATS an adapter answers $SRV.PING, INFO and STATS
// (and their .<service> and .<service>.<instance> forms) with the schemas
// of NATS micro, its STATS counting the calls it served.
func TestNATSServices(t *testing.T) {
	ctx := t.Context()
	srv, err := bnats.StartServer("")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	raw, err := broker.Open(octx, srv.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	m := telemetry.NewMetrics(telemetry.WithBroker("nats"))
	b := telemetry.MeterBroker(raw, m) // as a sidecar has it: behind the metrics decorator
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Version, cfg.Target = "orders", "orders-7", "v1", app.URL
	a, err := New(Options{Config: cfg, Sidecar: "callee", Broker: b, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	for _, path := range []string{"/a", "/b", "/fail"} {
		a.serve(&envelope.Request{ID: 1, Source: "caller", SourceService: "web", Service: "orders", Method: "GET",
			Path: path, ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP})
	}

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ask := func(verb micro.Verb, name, id string, v any) {
		t.Helper()
		subject, _ := micro.ControlSubject(verb, name, id)
		msg, err := nc.Request(subject, nil, 2*time.Second)
		if err != nil {
			t.Fatalf("request %s: %v", subject, err)
		}
		if err := json.Unmarshal(msg.Data, v); err != nil {
			t.Fatalf("%s answer is not JSON: %v\n%s", subject, err, msg.Data)
		}
	}
	want := micro.ServiceIdentity{Name: "orders", ID: "orders-7", Version: "1.0.0"}
	for _, ids := range [][2]string{{"", ""}, {"orders", ""}, {"orders", "orders-7"}} {
		var ping micro.Ping
		ask(micro.PingVerb, ids[0], ids[1], &ping)
		if ping.Type != micro.PingResponseType || ping.Name != want.Name || ping.ID != want.ID || ping.Version != want.Version {
			t.Errorf("PING %v = %+v, want %s of %+v", ids, ping, micro.PingResponseType, want)
		}
	}
	var info micro.Info
	ask(micro.InfoVerb, "orders", "", &info)
	if info.Type != micro.InfoResponseType || info.ID != "orders-7" || len(info.Endpoints) != 1 ||
		info.Endpoints[0].Subject != "busmesh.default.svc.orders" || info.Endpoints[0].QueueGroup != "busmesh.default.svc.orders" {
		t.Errorf("INFO = %+v, want one endpoint on busmesh.default.svc.orders", info)
	}
	var stats micro.Stats
	ask(micro.StatsVerb, "orders", "orders-7", &stats)
	if stats.Type != micro.StatsResponseType || len(stats.Endpoints) != 1 || stats.Started.IsZero() {
		t.Fatalf("STATS = %+v, want one endpoint", stats)
	}
	e := stats.Endpoints[0]
	if e.NumRequests != 3 || e.NumErrors != 1 || e.LastError != "500" || e.ProcessingTime <= 0 || e.AverageProcessingTime <= 0 {
		t.Errorf("STATS endpoint = %+v, want 3 requests, 1 error (500), processing time", e)
	}
	// Another service's name gets no answer from this one.
	subject, _ := micro.ControlSubject(micro.PingVerb, "payments", "")
	if _, err := nc.Request(subject, nil, 200*time.Millisecond); err == nil {
		t.Errorf("%s answered, want no responder", subject)
	}
}

func TestSemverOf(t *testing.T) {
	for in, want := range map[string]string{"v1.2.3": "1.2.3", "1.0.0-rc.1": "1.0.0-rc.1", "v2": "2.0.0", "blue": "0.0.0", "": "0.0.0"} {
		if got := semverOf(in); got != want {
			t.Errorf("semverOf(%q) = %q, want %q", in, got, want)
		}
	}
}
