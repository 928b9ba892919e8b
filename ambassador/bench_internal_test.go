package ambassador

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// serviceRequest decodes the request a test broker takes on a service
// subject; ok is false for anything else published (discovery, frames),
// and err says why a service subject's message did not decode.
func serviceRequest(subject string, data []byte) (req envelope.Request, ok bool, err error) {
	if !strings.HasPrefix(subject, "busmesh.default.svc.") {
		return req, false, nil
	}
	_, msg, err := envelope.Unwrap(data)
	if err == nil {
		err = req.Unmarshal(msg)
	}
	return req, err == nil, err
}

// loopBroker answers every request it is given at once, as if an adapter
// and its application took no time: what remains is the ambassador's own
// cost.
type loopBroker struct {
	mu    sync.Mutex
	inbox broker.Handler // the handler of the ambassador's inbox
	resp  envelope.Response
}

func (l *loopBroker) Publish(ctx context.Context, subject string, data []byte) error {
	req, ok, err := serviceRequest(subject, data)
	if !ok {
		return err
	}
	l.mu.Lock()
	r := l.resp
	h := l.inbox
	l.mu.Unlock()
	r.ID, r.Body = req.ID, req.Body // echo
	// The broker hands the handler a message of its own.
	h(ctx, r.AppendEnvelope(make([]byte, 0, r.EncodedSize())))
	return nil
}

func (l *loopBroker) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	if strings.HasSuffix(subject, ".mirror") {
		return nopSub{}, nil
	}
	l.mu.Lock()
	l.inbox = h
	l.mu.Unlock()
	return nopSub{}, nil
}

func (l *loopBroker) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (l *loopBroker) Close() error { return nil }

type nopSub struct{}

func (nopSub) Unsubscribe() error { return nil }

// discardWriter is a ResponseWriter that keeps nothing, reused across
// iterations so the benchmark measures the handler, not a recorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// Flush is there as net/http's own writer has it.
func (w *discardWriter) Flush() {}

func newBenchAmbassador(b *testing.B) *Ambassador {
	cfg := config.NewAmbassador()
	cfg.Service = "bench"
	lb := &loopBroker{resp: envelope.Response{Status: 200, Instance: "i-1",
		Headers: []string{"Content-Type", "application/octet-stream", "Date", "Tue, 24 Nov 2026 10:00:00 GMT"}}}
	a, err := New(context.Background(), Options{Config: cfg, Sidecar: "bench", Broker: lb})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkAmbassadorHTTP is the ambassador's handling of one 128-byte
// HTTP call, request to response, with the broker and the adapter taking
// no time. allocs/op is the ambassador's own, the HTTP server's excluded.
func BenchmarkAmbassadorHTTP(b *testing.B) {
	benchHTTP(b, newBenchAmbassador(b), "User-Agent", "bench", "Accept", "*/*")
}

// benchHTTP runs the ambassador's handling of a 128-byte POST to orders,
// with the given header pairs, b.N times; every answer must be a 200.
func benchHTTP(b *testing.B, a *Ambassador, headers ...string) {
	h := a.Handler("orders")
	body := bytes.Repeat([]byte("x"), 128)
	rd := bytes.NewReader(body)
	req, _ := http.NewRequest("POST", "http://127.0.0.1:9001/orders/7?x=1", io.NopCloser(rd))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.ContentLength = int64(len(body))
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		clear(w.h)
		h.ServeHTTP(w, req)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// BenchmarkCorrelation is request/reply matching alone: register a call,
// deliver its answer through the inbox handler, wait for it, release it.
func BenchmarkCorrelation(b *testing.B) {
	a := newBenchAmbassador(b)
	in := a.inbox
	resp := envelope.Response{Status: 200}
	buf := make([]byte, 0, 64)
	ctx := context.Background()
	b.ReportAllocs()
	p := &pending{ready: make(chan struct{}, 1)}
	for b.Loop() {
		resp.ID = in.register(p, "bench", in.pub)
		buf = resp.AppendEnvelope(buf[:0])
		in.handle(ctx, buf)
		select {
		case <-p.ready:
		case <-time.After(time.Second):
			b.Fatal("no answer")
		}
		in.release(p)
	}
}
