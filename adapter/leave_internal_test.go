package adapter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// latentBroker is a sinkBroker whose messages take a while to arrive
// (broker.Latent).
type latentBroker struct {
	sinkBroker
	delivery time.Duration
}

func (b *latentBroker) DeliveryTime() time.Duration { return b.delivery }

// TestShutdownWaitsForDelivery: on a broker.Latent broker, an adapter that
// said goodbye keeps taking calls for the broker's DeliveryTime, not only
// leaveGrace: a call that arrives after leaveGrace, sent before its caller
// heard the goodbye, is still answered.
func TestShutdownWaitsForDelivery(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
	b := &latentBroker{sinkBroker: sinkBroker{answers: make(chan string, 1)}, delivery: 4 * leaveGrace}
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := make(chan struct{})
	go func() { _ = a.Shutdown(context.Background()); close(done) }()
	time.Sleep(2 * leaveGrace)
	req := envelope.Request{ID: 1, Source: "caller", Service: "orders", Method: "GET", Path: "/",
		ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP, Deadline: time.Now().Add(5 * time.Second).UnixNano()}
	a.handleRequest(context.Background(), req.AppendEnvelope(nil))
	select {
	case why := <-b.answers:
		if why != "" {
			t.Errorf("a call %v after the goodbye was answered %q, want served", 2*leaveGrace, why)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("a call %v after the goodbye got no answer", 2*leaveGrace)
	}
	<-done
	if took := time.Since(start); took < b.delivery {
		t.Errorf("Shutdown took %v, want at least the broker's delivery time %v", took, b.delivery)
	}
}
