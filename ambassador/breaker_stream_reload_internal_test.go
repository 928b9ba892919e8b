package ambassador

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/grpcwire"
)

// grpcAnswers scripts a gRPC service: /t.S/Watch answers a header and one
// message, then keeps its stream open with no end; /t.S/Unary answers OK,
// or UNAVAILABLE while failing is set.
func grpcAnswers(failing func() bool) func(int, *envelope.Request) scripted {
	return func(_ int, req *envelope.Request) scripted {
		switch {
		case req.Method == "/t.S/Watch":
			return scripted{resp: &envelope.Response{Body: grpcwire.AppendMessage(nil, []byte("event")), More: true,
				ReplyTo: "busmesh.default.adapter.x"}}
		case failing():
			return scripted{resp: &envelope.Response{Trailers: []string{"grpc-status", "14", "grpc-message", "down"}}}
		}
		return scripted{resp: &envelope.Response{Body: grpcwire.AppendMessage(nil, []byte("ok")), Trailers: []string{"grpc-status", "0"}}}
	}
}

// grpcBreakerAmbassador serves service orders, with breaker brk and no
// retries, on a gRPC port, and returns it and a connection to it.
func grpcBreakerAmbassador(t *testing.T, sb *scriptBroker, brk *config.Breaker) (*Ambassador, *grpc.ClientConn) {
	t.Helper()
	cfg := config.NewAmbassador()
	cfg.Service = "web"
	cfg.Timeout = config.Duration(5 * time.Second)
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk, Retry: &config.Retry{Attempts: 1}}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	srv := a.newGRPCServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("orders"), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(grpcwire.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return a, conn
}

func unary(ctx context.Context, conn *grpc.ClientConn) error {
	var out grpcwire.Message
	return conn.Invoke(ctx, "/t.S/Unary", &grpcwire.Message{Data: []byte("q")}, &out)
}

// watch opens a server stream and reads its first message.
func watch(ctx context.Context, conn *grpc.ClientConn) (grpc.ClientStream, error) {
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/t.S/Watch")
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(&grpcwire.Message{Data: []byte("q")}); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	var m grpcwire.Message
	return st, st.RecvMsg(&m)
}

// TestBreakerStreamProbe: a server stream admitted as the half-open probe
// is judged when its answer's head comes, so the breaker closes and other
// calls pass while the stream stays open; before, every other call was
// refused circuit-open for the stream's whole life.
func TestBreakerStreamProbe(t *testing.T) {
	var mu sync.Mutex
	failing := true
	sb := &scriptBroker{script: grpcAnswers(func() bool { mu.Lock(); defer mu.Unlock(); return failing })}
	brk := config.NewServiceBreaker()
	brk.ConsecutiveFailures = 3
	brk.OpenFor = config.Duration(200 * time.Millisecond)
	_, conn := grpcBreakerAmbassador(t, sb, brk)
	for range 3 {
		if err := unary(t.Context(), conn); status.Code(err) != codes.Unavailable {
			t.Fatalf("failing call: %v, want the application's UNAVAILABLE", err)
		}
	}
	if err := unary(t.Context(), conn); err == nil || !strings.Contains(err.Error(), "circuit-open") {
		t.Fatalf("after 3 failures: %v, want circuit-open", err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	time.Sleep(250 * time.Millisecond) // open_for passes

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, err := watch(ctx, conn); err != nil { // the probe, kept open
		t.Fatalf("the probe stream: %v", err)
	}
	opened := time.Now()
	var err error
	for time.Since(opened) < time.Second {
		if err = unary(t.Context(), conn); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("a call %v after a probe stream's good head, the stream still open: %v; want it to pass", time.Since(opened).Round(time.Millisecond), err)
	}
}

// TestBreakerStreamDeadline: streams whose head came good and that end at
// their caller's deadline, as long-poll watches do, count as successes,
// not as timeouts that open the breaker.
func TestBreakerStreamDeadline(t *testing.T) {
	sb := &scriptBroker{script: grpcAnswers(func() bool { return false })}
	brk := config.NewServiceBreaker()
	brk.FailurePercent, brk.MinCalls = 50, 4
	a, conn := grpcBreakerAmbassador(t, sb, brk)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
			defer cancel()
			st, err := watch(ctx, conn)
			if err != nil {
				t.Errorf("watch: %v", err)
				return
			}
			var m grpcwire.Message
			if err := st.RecvMsg(&m); status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("watch after its first message: %v, want DEADLINE_EXCEEDED", err)
			}
		})
	}
	wg.Wait()
	// The caller's deadline may pass a moment before the ambassador's
	// calls end and are judged.
	waitFor(t, func() bool {
		return testutil.ToFloat64(a.metrics.AmbassadorInflight.WithLabelValues("web", "orders")) == 0
	})
	if err := unary(t.Context(), conn); err != nil {
		t.Fatalf("after 4 watches ended by their deadlines: %v; want the call to pass", err)
	}
}

// TestBreakerLimitsFollowReload: max_concurrent, max_pending and the retry
// budget follow a reload: lowered, raised, removed and added after the
// service's first call.
func TestBreakerLimitsFollowReload(t *testing.T) {
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{} }} // held until cancelled
	conf := func(maxConcurrent int) *config.Ambassador {
		cfg := config.NewAmbassador()
		cfg.Timeout = config.Duration(10 * time.Second)
		p := &config.ServicePolicy{Retry: &config.Retry{Attempts: 1}}
		if maxConcurrent > 0 {
			p.Breaker = config.NewServiceBreaker()
			p.Breaker.MaxConcurrent = maxConcurrent
		}
		cfg.Services = map[string]*config.ServicePolicy{"orders": p}
		return cfg
	}
	a, err := New(t.Context(), Options{Config: conf(0), Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	held := 0
	// hold starts n calls that stay in flight, and waits until they were sent.
	hold := func(n int) {
		for range n {
			wg.Go(func() {
				a.Handler("orders").ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://orders/x", nil).WithContext(ctx))
			})
		}
		held += n
		waitFor(t, func() bool { return len(sb.requests()) == held })
	}
	refused := func(step string, want string) {
		t.Helper()
		w := call(a, "GET", nil)
		if w.Code != http.StatusServiceUnavailable || w.Header().Get(HeaderError) != "overloaded" || !strings.Contains(w.Body.String(), want) {
			t.Errorf("%s: %d %q %q; want 503 overloaded saying %q", step, w.Code, w.Header().Get(HeaderError), w.Body.String(), want)
		}
	}
	hold(2) // calls before any limit
	if err := a.Reload(conf(1)); err != nil {
		t.Fatal(err)
	}
	hold(1)
	refused("max_concurrent added after the first call", "has 1 calls in flight")
	if err := a.Reload(conf(3)); err != nil {
		t.Fatal(err)
	}
	hold(3)
	refused("max_concurrent raised to 3", "has 3 calls in flight")
	if err := a.Reload(conf(2)); err != nil {
		t.Fatal(err)
	}
	hold(2)
	refused("max_concurrent lowered to 2", "has 2 calls in flight")
	if err := a.Reload(conf(0)); err != nil {
		t.Fatal(err)
	}
	hold(10) // waitFor fails the test when any is refused
}

// TestRetryBudgetFollowsReload: a changed retry budget is the one spent.
func TestRetryBudgetFollowsReload(t *testing.T) {
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{resp: app503()} }}
	conf := func(percent int) *config.Ambassador {
		cfg := config.NewAmbassador()
		cfg.Timeout = config.Duration(5 * time.Second)
		r := config.NewRetry()
		r.Attempts = 2
		r.Backoff = config.Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(2 * time.Millisecond)}
		r.Budget = config.Budget{Percent: percent}
		cfg.Services = map[string]*config.ServicePolicy{"orders": {Retry: r}}
		return cfg
	}
	a, err := New(t.Context(), Options{Config: conf(0), Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	attempts := func() int {
		before := len(sb.requests())
		if w := call(a, "GET", nil); w.Code != 503 {
			t.Fatalf("status %d, want the application's 503", w.Code)
		}
		return len(sb.requests()) - before
	}
	for i, tc := range []struct {
		percent, attempts int
	}{{0, 1}, {100, 2}, {0, 1}} {
		if i > 0 {
			if err := a.Reload(conf(tc.percent)); err != nil {
				t.Fatal(err)
			}
		}
		for range 3 {
			if got := attempts(); got != tc.attempts {
				t.Fatalf("budget percent %d (step %d): %d attempts, want %d", tc.percent, i, got, tc.attempts)
			}
		}
	}
}

// TestBreakerStreamHeadFailure: a streaming answer whose head is a
// failure (an HTTP 503 with a body to follow) counts when the head comes,
// not when the stream ends.
func TestBreakerStreamHeadFailure(t *testing.T) {
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted {
		return scripted{resp: &envelope.Response{Status: 503, More: true, ReplyTo: "busmesh.default.adapter.x"}}
	}}
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(5 * time.Second)
	brk := config.NewServiceBreaker()
	brk.ConsecutiveFailures = 1
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk, Retry: &config.Retry{Attempts: 1}}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		defer func() { _ = recover() }() // the stream is aborted (http.ErrAbortHandler) when cancelled
		a.Handler("orders").ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://orders/x", nil).WithContext(ctx))
	}()
	waitFor(t, func() bool { return len(sb.requests()) == 1 })
	var w *httptest.ResponseRecorder
	for start := time.Now(); time.Since(start) < time.Second; time.Sleep(10 * time.Millisecond) {
		if w = call(a, "GET", nil); w.Header().Get(HeaderError) == "circuit-open" {
			return
		}
	}
	t.Fatalf("while a stream whose head was 503 is open: %d %q; want circuit-open", w.Code, w.Header().Get(HeaderError))
}

// TestServiceStateStaleRoute: once a call made the state of a service
// for the policy a reload put in force, a call that began before the
// reload, with the old route, gets that state and does not make it again
// for its own policy.
func TestServiceStateStaleRoute(t *testing.T) {
	conf := func(maxConcurrent int) *config.Ambassador {
		cfg := config.NewAmbassador()
		brk := config.NewServiceBreaker()
		brk.MaxConcurrent = maxConcurrent
		cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk}}
		return cfg
	}
	a, err := New(t.Context(), Options{Config: conf(1), Sidecar: "web-1", Broker: &scriptBroker{}})
	if err != nil {
		t.Fatal(err)
	}
	old := a.table.Load().services["orders"]
	before := a.serviceOf(&Call{Route: old})
	if err := a.Reload(conf(5)); err != nil {
		t.Fatal(err)
	}
	s := a.serviceOf(&Call{Route: a.table.Load().services["orders"]})
	if s == before || cap(s.slots) != 5 || s.serviceShared != before.serviceShared {
		t.Fatalf("after the reload: slots %d (same state %v, same breaker %v); want a new state of 5 keeping the breaker",
			cap(s.slots), s == before, s.serviceShared == before.serviceShared)
	}
	if got := a.serviceOf(&Call{Route: old}); got != s {
		t.Fatalf("a stale route made the state again (%d slots)", cap(got.slots))
	}
}
