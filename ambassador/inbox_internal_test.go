package ambassador

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// silentBroker takes requests and never answers.
type silentBroker struct{ loopBroker }

func (*silentBroker) Publish(context.Context, string, []byte) error { return nil }

// TestNothingLeftBehind: calls that time out, or whose caller goes away,
// leave no registered call and no goroutine behind.
func TestNothingLeftBehind(t *testing.T) {
	cfg := config.NewAmbassador()
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "t", Broker: &silentBroker{}})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler("orders")
	base := runtime.NumGoroutine()
	for range 20 {
		req := httptest.NewRequest("POST", "/x", nil)
		req.Header.Set(HeaderTimeout, "5ms")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504", w.Code)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go func() { time.Sleep(2 * time.Millisecond); cancel() }()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/y", nil).WithContext(ctx))
	}
	if n := a.inbox.pending(); n != 0 {
		t.Errorf("%d calls still registered after every call ended, want 0", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines after the calls, %d before", n, base)
	}
}

// TestLateAnswerAfterEnd: an answer that lands while its call ends (the
// call timed out as the adapter answered) is either taken before the call
// is detached or not at all; what the end reads is never half written.
// Run with -race: before detach, the end's read of the instance raced the
// decoding of a late answer.
func TestLateAnswerAfterEnd(t *testing.T) {
	cfg := config.NewAmbassador()
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "t", Broker: &silentBroker{}})
	if err != nil {
		t.Fatal(err)
	}
	in := a.inbox
	p := &pending{ready: make(chan struct{}, 1)}
	for range 200 {
		resp := envelope.Response{Status: 200, Instance: "i-1"}
		resp.ID = in.register(p, "orders", in.pub)
		msg := resp.AppendEnvelope(nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			in.handle(t.Context(), msg)
		}()
		in.detach(p)
		if got := p.resp.Instance; got != "" && got != "i-1" {
			t.Fatalf("instance %q after detach", got)
		}
		<-done
		if p.answered && p.resp.Instance != "i-1" {
			t.Fatalf("answered, instance %q", p.resp.Instance)
		}
		p.clear()
	}
}

// TestAnswerOverAnotherBroker: an answer for a call that went over one
// broker, arriving over another (a mirror broker, or two brokers bridged),
// is dropped and counted; over the call's own broker it is taken.
func TestAnswerOverAnotherBroker(t *testing.T) {
	a, err := New(t.Context(), Options{Config: config.NewAmbassador(), Sidecar: "t", Broker: &silentBroker{}})
	if err != nil {
		t.Fatal(err)
	}
	in := a.inbox
	other := bus.NewPublisher(&silentBroker{})
	p := &pending{ready: make(chan struct{}, 1)}
	resp := envelope.Response{Status: 200, Instance: "i-1"}
	resp.ID = in.register(p, "orders", other)
	msg := resp.AppendEnvelope(nil)
	in.handle(t.Context(), msg) // over the sidecar's own broker
	if p.answered {
		t.Fatal("an answer over another broker than the call's was taken")
	}
	in.handlerOn(other)(t.Context(), msg)
	if !p.answered {
		t.Fatal("the answer over the call's own broker was not taken")
	}
	in.release(p)
}
