package adapter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
)

// shutdownMargin is how long past its ctx Shutdown may take: answering
// the waiting line, and the calls in flight, which the application may
// go on with for appGrace after they are cancelled (app_http.go).
const shutdownMargin = appGrace + 500*time.Millisecond

// TestShutdownBoundedByContext: when Shutdown's time is up with every
// worker busy and calls waiting, the waiting calls are answered at once
// (overloaded: the instance is shutting down) instead of being served,
// the calls in flight are cancelled, and Shutdown returns within its ctx
// and shutdownMargin, not after the whole line has been served.
func TestShutdownBoundedByContext(t *testing.T) {
	var slow atomic.Bool
	var inApp atomic.Int32 // slow calls the application has started
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			inApp.Add(1)
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
			}
		}
		w.Write([]byte("ok"))
	}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target, cfg.Concurrency = "orders", "i-1", app.URL, 2
	b := &answerBroker{}
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := uint64(0)
	send := func() uint64 {
		id++
		req := envelope.Request{ID: id, Source: "caller", Service: "orders", Method: "GET", Path: "/",
			ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP,
			Deadline: time.Now().Add(30 * time.Second).UnixNano()}
		a.handleRequest(context.Background(), req.AppendEnvelope(nil))
		return id
	}
	// poll waits for cond, failing the test after a while.
	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// A fast service time measured lets a long line wait (see admit).
	for range 20 {
		n := send()
		poll("a fast call's answer", func() bool { _, ok := b.answer(n); return ok })
	}

	slow.Store(true)
	const waiting = 10
	var ids []uint64
	for range cfg.Concurrency + waiting {
		ids = append(ids, send())
	}
	lineLen := func() int {
		a.pool.mu.Lock()
		defer a.pool.mu.Unlock()
		return len(a.pool.waiting)
	}
	poll("both workers in the application and the line full", func() bool {
		return inApp.Load() == int32(cfg.Concurrency) && lineLen() == waiting
	})

	const budget = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	err = a.Shutdown(ctx)
	took := time.Since(start)
	if took > budget+shutdownMargin {
		t.Errorf("Shutdown with a %v ctx returned after %v", budget, took)
	}
	if err == nil {
		t.Error("Shutdown past its ctx returned no error")
	}
	if n := inApp.Load(); n != int32(cfg.Concurrency) {
		t.Errorf("the application started %d slow calls, want only the %d in flight at shutdown", n, cfg.Concurrency)
	}
	// The calls that were waiting are answered, not left to their deadline.
	for _, n := range ids[cfg.Concurrency:] {
		r, ok := b.answer(n)
		switch {
		case !ok:
			t.Errorf("call %d, waiting at shutdown, got no answer", n)
		case r.Error != reason.Overloaded.String() || r.Detail != shedDetail:
			t.Errorf("call %d, waiting at shutdown, answered %q (%q), want %q (%q)", n, r.Error, r.Detail,
				reason.Overloaded.String(), shedDetail)
		}
	}
}

// TestCancelUntilCatchesLateCalls: a call registered after Shutdown first
// cancels the calls being served (its worker took it from the line just
// before the line was shed) is cancelled too, not left to run to its end.
func TestCancelUntilCatchesLateCalls(t *testing.T) {
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", "http://127.0.0.1:1"
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: &answerBroker{}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // the workers have ended: the late call was cancelled
	late := &serverCall{cancel: sync.OnceFunc(func() { close(done) })}
	// The first call's cancel registers the late one: it cannot be added
	// before that cancel pass has ended, as the pass holds the table.
	first := &serverCall{cancel: sync.OnceFunc(func() {
		go a.calls.add(callKey{"caller", 2}, late)
	})}
	a.calls.add(callKey{"caller", 1}, first)

	ended := make(chan struct{})
	go func() {
		a.cancelUntil(done)
		close(ended)
	}()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		close(done) // let cancelUntil end
		<-ended
		t.Fatal("a call registered after the first cancel was never cancelled")
	}
}
