package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/broker"
	bnats "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/telemetry"
)

func TestSystem(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222": "nats", "embedded": "nats", "tls://h:1": "nats",
		"amqp://guest:guest@127.0.0.1:5672/": "rabbitmq", "amqps://h/": "rabbitmq",
		"kafka://127.0.0.1:9092": "kafka", "kafkas://h:1": "kafka", "other://x": "other",
	} {
		if got := telemetry.System(in); got != want {
			t.Errorf("System(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestMeterBroker counts the traffic of a real (embedded NATS) broker.
func TestMeterBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	srv, err := bnats.StartServer("")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	raw, err := broker.Open(ctx, srv.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := telemetry.NewMetrics(telemetry.WithBroker("nats"))
	b := telemetry.MeterBroker(raw, m)
	if _, ok := b.(broker.Returner); !ok {
		t.Error("the metered NATS broker lost broker.Returner")
	}
	if got, want := broker.MaxMessageBytes(b), broker.MaxMessageBytes(raw); got != want {
		t.Errorf("MaxMessageBytes = %d, want the backend's %d", got, want)
	}
	got := make(chan struct{}, 3)
	sub, err := b.Subscribe(ctx, "metered.test", func(context.Context, []byte) { got <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for range 3 {
		if err := b.Publish(ctx, "metered.test", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatal("messages did not arrive")
		}
	}
	if err := b.Publish(ctx, "metered.test", make([]byte, broker.MaxMessageBytes(raw)+1)); err == nil {
		t.Error("an oversize publish succeeded")
	}
	// A publish given up because its call ended is no broker error.
	ended, end := context.WithCancel(ctx)
	end()
	if err := b.Publish(ended, "metered.test", []byte("x")); err == nil {
		t.Error("a publish with an ended context succeeded")
	}
	for op, want := range map[string]float64{"publish": 3, "receive": 3} {
		if got := testutil.ToFloat64(m.BrokerMessages.WithLabelValues(op)); got != want {
			t.Errorf("broker messages{operation=%s} = %v, want %v", op, got, want)
		}
	}
	if got := testutil.ToFloat64(m.BrokerErrors.WithLabelValues("publish")); got != 1 {
		t.Errorf("broker errors{operation=publish} = %v, want 1", got)
	}
	connected := func() float64 {
		t.Helper()
		n, err := testutil.GatherAndCount(m.Registry, "busmesh_broker_connected")
		if err != nil || n != 1 {
			t.Fatalf("busmesh_broker_connected: %d series, %v", n, err)
		}
		families, _ := m.Registry.Gather()
		for _, f := range families {
			if f.GetName() == "busmesh_broker_connected" {
				return f.Metric[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if got := connected(); got != 1 {
		t.Errorf("broker connected = %v, want 1", got)
	}
	srv.Shutdown() // the server goes: the connection is down, reconnecting
	deadline := time.Now().Add(5 * time.Second)
	for connected() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := connected(); got != 0 {
		t.Errorf("broker connected with the server gone = %v, want 0", got)
	}
	b.Close()
	if got := connected(); got != 0 {
		t.Errorf("broker connected after Close = %v, want 0", got)
	}
}

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	l := telemetry.NewAccessLog(&buf, 1)
	l.Log(&telemetry.Access{Side: "ambassador", TraceID: telemetry.TraceID("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
		Caller: "web", Service: "orders", Instance: "orders-1", Protocol: "http", Method: "GET", Path: "/a",
		Status: 200, Duration: 1500 * time.Microsecond, BytesIn: 3, BytesOut: 5, Broker: "nats"})
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("access log line is not JSON: %v\n%s", err, buf.Bytes())
	}
	for k, want := range map[string]any{"msg": "access", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "caller": "web",
		"service": "orders", "instance": "orders-1", "method": "GET", "path": "/a", "status": 200.0, "duration": 0.0015,
		"bytes_in": 3.0, "bytes_out": 5.0, "broker": "nats", "reason": ""} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %v", k, line[k], want)
		}
	}
	none, some := telemetry.NewAccessLog(&buf, 0), telemetry.NewAccessLog(&buf, 0.5)
	n := 0
	for range 1000 {
		if none.Sampled() {
			t.Fatal("sample 0 logged a call")
		}
		if some.Sampled() {
			n++
		}
	}
	if n < 350 || n > 650 {
		t.Errorf("sample 0.5 logged %d of 1000 calls", n)
	}
}
