package adapter

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestRejects feeds the adapter what it must not serve; each is counted
// by reason and none reaches the application.
func TestRejects(t *testing.T) {
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", "http://127.0.0.1:1"
	m := telemetry.NewMetrics()
	sink := &sinkBroker{answers: make(chan string, 16)}
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: sink, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	good := envelope.Request{ID: 1, Source: "caller", Service: "orders", Method: "GET", Path: "/",
		ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP}
	expired, other, noReply, elsewhere, asGRPC, noPath := good, good, good, good, good, good
	expired.Deadline = time.Now().Add(-time.Second).UnixNano()
	other.Service = "payments"
	noReply.ReplyTo = ""
	// Appended to http://127.0.0.1:1 these would call another host.
	elsewhere.Path = "@127.0.0.2:1/x"
	asGRPC.Protocol, asGRPC.Path = envelope.ProtocolGRPC, ".other.example/x"
	noPath.Path = ""
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"garbage", []byte("not an envelope"), "malformed"},
		{"a frame", (&envelope.Frame{ID: 1}).AppendEnvelope(nil), "unexpected-kind"},
		{"expired", expired.AppendEnvelope(nil), "expired"},
		{"another service", other.AppendEnvelope(nil), "wrong-service"},
		{"no reply subject", noReply.AppendEnvelope(nil), "malformed"},
		{"a path naming another host", elsewhere.AppendEnvelope(nil), "malformed"},
		{"the same, said to be gRPC", asGRPC.AppendEnvelope(nil), "malformed"},
		{"no path", noPath.AppendEnvelope(nil), "malformed"},
	}
	for _, tt := range tests {
		before := testutil.ToFloat64(m.EnvelopesRejected.WithLabelValues("adapter", tt.reason))
		a.handleRequest(context.Background(), tt.data)
		if got := testutil.ToFloat64(m.EnvelopesRejected.WithLabelValues("adapter", tt.reason)); got != before+1 {
			t.Errorf("%s: rejected{reason=%q} went from %v to %v, want +1", tt.name, tt.reason, before, got)
		}
	}
	a.pool.close() // the calls any were admitted as have ended, answered
	a.pool.wait()
	select {
	case <-sink.answers:
		t.Error("a rejected envelope was answered")
	default:
	}
}
