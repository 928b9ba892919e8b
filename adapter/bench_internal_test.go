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
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// sinkBroker passes on what each message published to the caller's inbox
// says: "" for an answer, its Error field for a failed call, and what
// else it is for a message that is not an answer (a frame of a streamed
// one, which the benchmark does not expect).
type sinkBroker struct{ answers chan string }

func (s *sinkBroker) Publish(_ context.Context, subject string, data []byte) error {
	if subject != "busmesh.default.inbox.caller" {
		return nil
	}
	kind, msg, err := envelope.Unwrap(data)
	switch {
	case err != nil:
		s.answers <- "malformed: " + err.Error()
	case kind != envelope.KindResponse:
		s.answers <- fmt.Sprintf("a message of kind %d, not an answer", kind)
	default:
		s.answers <- envelope.ScanString(msg, 7) // Response.Error, read without allocating
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
		if r.URL.Query().Get("chunked") != "" {
			// Written at once without a length: Go's server sends it
			// chunked, as test/bench's application does.
			body, _ := io.ReadAll(r.Body)
			w.Write(body)
			return
		}
		// Read all before answering: an HTTP/1 server closes the request
		// body once the answer starts.
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
	sink := &sinkBroker{answers: make(chan string, 1)}
	a, err := New(Options{Config: cfg, Sidecar: "bench", Broker: sink})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, path string
		size       int
	}{
		{"128B", "/orders/7?x=1", 128},
		{"16384B", "/orders/7?x=1", 16 << 10},
		{"16384B-chunked", "/orders/7?chunked=1", 16 << 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := envelope.Request{ID: 1, Source: "caller", Service: "orders", Protocol: envelope.ProtocolHTTP,
				Method: "POST", Path: bc.path, ReplyTo: "busmesh.default.inbox.caller",
				Headers: []string{"Content-Type", "application/json", "User-Agent", "bench", "Accept", "*/*"},
				Body:    bytes.Repeat([]byte("x"), bc.size)}
			ctx := context.Background()
			// A call the adapter drops unanswered fails the benchmark
			// instead of hanging it.
			noAnswer := time.NewTimer(time.Hour)
			defer noAnswer.Stop()
			b.ReportAllocs()
			for b.Loop() {
				// The broker hands the adapter a message of its own each time.
				a.handleRequest(ctx, req.AppendEnvelope(make([]byte, 0, req.EncodedSize())))
				noAnswer.Reset(5 * time.Second)
				select {
				case why := <-sink.answers:
					if why != "" {
						b.Fatalf("call failed: %s", why)
					}
				case <-noAnswer.C:
					b.Fatal("no answer within 5s")
				}
			}
		})
	}
}
