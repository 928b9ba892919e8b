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
	"github.com/busmesh/busmesh/internal/config"
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
	if got := broker.DeliveryTime(b); got != 0 {
		t.Errorf("DeliveryTime of metered NATS = %v, want 0 (not broker.Latent)", got)
	}
	if got := broker.DeliveryTime(telemetry.MeterBroker(latent{raw}, telemetry.NewMetrics())); got != 3*time.Second {
		t.Errorf("DeliveryTime of a metered broker.Latent = %v, want the backend's 3s", got)
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
		if got := testutil.ToFloat64(m.BrokerMessages.WithLabelValues("nats", "primary", op)); got != want {
			t.Errorf("broker messages{operation=%s} = %v, want %v", op, got, want)
		}
	}
	if got := testutil.ToFloat64(m.BrokerErrors.WithLabelValues("nats", "primary", "publish")); got != 1 {
		t.Errorf("broker errors{operation=publish} = %v, want 1", got)
	}
	connected := func() float64 { t.Helper(); return connectedGauge(t, m, "primary") }
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

// connectedGauge is the value of busmesh_broker_connected for the
// connection named conn.
func connectedGauge(t *testing.T, m *telemetry.Metrics, conn string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "busmesh_broker_connected" {
			continue
		}
		for _, s := range f.Metric {
			for _, l := range s.GetLabel() {
				if l.GetName() == "connection" && l.GetValue() == conn {
					return s.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no busmesh_broker_connected{connection=%q}", conn)
	return -1
}

// TestMeterConnection: a further connection (ambassador.brokers), to a
// broker of the primary's system or another, counts its traffic and
// reports its state under its own name, apart from the primary's.
func TestMeterConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	m := telemetry.NewMetrics(telemetry.WithBroker("nats"))
	open := func() (broker.Broker, *bnats.Server) {
		srv, err := bnats.StartServer("")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Shutdown)
		b, err := broker.Open(ctx, srv.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b, srv
	}
	rawPrimary, _ := open()
	rawSecond, srvSecond := open()
	rawThird, _ := open()
	primary := telemetry.MeterBroker(rawPrimary, m)
	second := telemetry.MeterConnection(rawSecond, m, "second", "nats")
	third := telemetry.MeterConnection(rawThird, m, "third", "kafka") // as a Kafka connection is labelled
	for _, b := range []broker.Broker{second, third} {
		if _, ok := b.(broker.Returner); !ok {
			t.Error("a metered connection lost broker.Returner")
		}
	}
	for i, b := range []broker.Broker{primary, second, second, third, third, third} {
		if err := b.Publish(ctx, "metered.test", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		system, conn string
		want         float64
	}{{"nats", "primary", 1}, {"nats", "second", 2}, {"kafka", "third", 3}} {
		if got := testutil.ToFloat64(m.BrokerMessages.WithLabelValues(c.system, c.conn, "publish")); got != c.want {
			t.Errorf("broker messages{broker=%s,connection=%s,operation=publish} = %v, want %v", c.system, c.conn, got, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(m.Registry, "busmesh_broker_connected"); err != nil || n != 3 {
		t.Fatalf("busmesh_broker_connected: %d series, %v; want 3", n, err)
	}
	srvSecond.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for connectedGauge(t, m, "second") != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for conn, want := range map[string]float64{"primary": 1, "second": 0, "third": 1} {
		if got := connectedGauge(t, m, conn); got != want {
			t.Errorf("busmesh_broker_connected{connection=%s} = %v with the second's server gone, want %v", conn, got, want)
		}
	}
	if telemetry.PrimaryConnection != config.PrimaryBroker {
		t.Errorf("the primary connection is labelled %q, but brokers weights name it %q", telemetry.PrimaryConnection, config.PrimaryBroker)
	}
	// A name metered again keeps its first gauge, and meters.
	again := telemetry.MeterConnection(rawThird, m, "third", "kafka")
	if err := again.Publish(ctx, "metered.test", nil); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.BrokerMessages.WithLabelValues("kafka", "third", "publish")); got != 4 {
		t.Errorf("after metering third again: %v publishes, want 4", got)
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

// latent is a broker.Latent whose messages take 3 s.
type latent struct{ broker.Broker }

func (latent) DeliveryTime() time.Duration { return 3 * time.Second }
