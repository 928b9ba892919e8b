package adapter

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// sinkBroker signals every publish to the caller's inbox: the adapter's
// answers.
type sinkBroker struct{ answers chan struct{} }

func (s *sinkBroker) Publish(_ context.Context, subject string, data []byte) error {
	if subject == "busmesh.default.inbox.caller" {
		s.answers <- struct{}{}
	}
	return nil
}

func (s *sinkBroker) Subscribe(context.Context, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *sinkBroker) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *sinkBroker) Close() error { return nil }

type nopSub struct{}

func (nopSub) Unsubscribe() error { return nil }

// BenchmarkAdapterHTTP is the adapter's handling of one call: the
// envelope off the bus, the HTTP call to a local application (net/http on
// loopback, answering with a Content-Length), the answer back on the bus.
// allocs/op includes net/http's client.
func BenchmarkAdapterHTTP(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
		io.Copy(w, r.Body)
	}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
	sink := &sinkBroker{answers: make(chan struct{}, 1)}
	a, err := New(Options{Config: cfg, Sidecar: "bench", Broker: sink})
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{128, 16 << 10} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			req := envelope.Request{ID: 1, Source: "caller", Service: "orders", Protocol: envelope.ProtocolHTTP,
				Method: "POST", Path: "/orders/7?x=1", ReplyTo: "busmesh.default.inbox.caller",
				Headers: []string{"Content-Type", "application/json", "User-Agent", "bench", "Accept", "*/*"},
				Body:    bytes.Repeat([]byte("x"), size)}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				// The broker hands the adapter a message of its own each time.
				a.handleRequest(ctx, req.AppendEnvelope(make([]byte, 0, req.EncodedSize())))
				<-sink.answers
			}
		})
	}
}
