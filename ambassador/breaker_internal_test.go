package ambassador

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

func TestBreakerStates(t *testing.T) {
	cfg := config.NewServiceBreaker()
	cfg.ConsecutiveFailures = 3
	cfg.OpenFor = config.Duration(time.Second)
	var b breaker
	now := time.Now().UnixNano()
	sec := int64(time.Second)
	for range 2 {
		b.record(cfg, now, true, false)
	}
	b.record(cfg, now, false, false) // a success breaks the run
	for range 2 {
		b.record(cfg, now, true, false)
	}
	if ok, _, _ := b.admit(now); !ok {
		t.Fatal("open after 2 consecutive failures, want closed until 3")
	}
	if got := b.record(cfg, now, true, false); got != breakerOpen {
		t.Fatalf("3rd consecutive failure: state change %d, want open", got)
	}
	if ok, _, wait := b.admit(now + sec/2); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("open breaker admitted a call (ok %v, wait %v)", ok, wait)
	}
	// Half-open: one probe goes, the next call does not.
	ok, probe, _ := b.admit(now + sec)
	if !ok || !probe {
		t.Fatalf("after open_for: admitted %v, probe %v; want a probe", ok, probe)
	}
	if ok, _, _ := b.admit(now + sec); ok {
		t.Fatal("a second call admitted while the probe is out")
	}
	// The probe fails: open again, for twice as long.
	if got := b.record(cfg, now+sec, true, true); got != breakerOpen {
		t.Fatalf("failed probe: state change %d, want open", got)
	}
	if ok, _, _ := b.admit(now + sec + sec*3/2); ok {
		t.Fatal("reopened breaker admitted a call before 2×open_for")
	}
	ok, probe, _ = b.admit(now + 3*sec + 1)
	if !ok || !probe {
		t.Fatal("no probe after 2×open_for")
	}
	if got := b.record(cfg, now+3*sec, false, true); got != breakerClosed {
		t.Fatalf("successful probe: state change %d, want closed", got)
	}
	if ok, probe, _ := b.admit(now + 3*sec); !ok || probe {
		t.Fatal("closed breaker refused a call")
	}
}

func TestBreakerFailureRatio(t *testing.T) {
	cfg := config.NewServiceBreaker()
	cfg.FailurePercent = 50
	cfg.MinCalls = 10
	var b breaker
	now := time.Now().UnixNano()
	// Alternating failures: never 2 in a row, but half of all calls.
	opened := -1
	for i := range 20 {
		if b.record(cfg, now, i%2 == 1, false) == breakerOpen {
			opened = i
			break
		}
	}
	if opened != 9 {
		t.Fatalf("opened at call %d, want 9 (min_calls 10, 50%% failures)", opened)
	}
}

// TestBreakerLimits: beyond max_concurrent + max_pending, calls are
// answered at once with overloaded and a Retry-After; with the circuit
// open, circuit-open.
func TestBreakerLimits(t *testing.T) {
	release := make(chan struct{})
	sb := &scriptBroker{script: func(n int, req *envelope.Request) scripted {
		return scripted{} // answered below, on release
	}}
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(5 * time.Second)
	brk := config.NewServiceBreaker()
	brk.MaxConcurrent, brk.MaxPending = 2, 1
	brk.ConsecutiveFailures = 3
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-release
		for _, r := range sb.requests() {
			resp := &envelope.Response{ID: r.ID, Status: 500}
			sb.mu.Lock()
			h := sb.inbox
			sb.mu.Unlock()
			h(t.Context(), resp.AppendEnvelope(nil))
		}
	}()
	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for range 3 { // 2 in flight, 1 waiting
		wg.Go(func() { codes <- call(a, "POST", nil).Code })
	}
	waitFor(t, func() bool { return len(sb.requests()) == 2 })
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	w := call(a, "POST", nil)
	if w.Code != 503 || w.Header().Get(HeaderError) != "overloaded" || w.Header().Get("Retry-After") == "" {
		t.Errorf("4th call: %d %s=%q Retry-After %q; want 503 overloaded with Retry-After", w.Code, HeaderError,
			w.Header().Get(HeaderError), w.Header().Get("Retry-After"))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the refused call took %v: want an answer at once", took)
	}
	close(release)
	waitFor(t, func() bool { return len(sb.requests()) == 3 })
	// The third answer comes from a second pass.
	sb.mu.Lock()
	last := sb.seen[2]
	h := sb.inbox
	sb.mu.Unlock()
	h(t.Context(), (&envelope.Response{ID: last.ID, Status: 500}).AppendEnvelope(nil))
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 500 {
			t.Errorf("a call in the limits got %d, want the application's 500", c)
		}
	}
	// Three 500s in a row opened the circuit (consecutive_failures 3).
	w = call(a, "POST", nil)
	if w.Code != 503 || w.Header().Get(HeaderError) != "circuit-open" || w.Header().Get("Retry-After") == "" {
		t.Errorf("after failures: %d %q Retry-After %q; want 503 circuit-open with Retry-After", w.Code,
			w.Header().Get(HeaderError), w.Header().Get("Retry-After"))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met within 5s")
}

// holdingBroker is a scriptBroker whose publishes of requests wait, while
// hold is set, until their call ends, as a backend waiting for its
// connection does.
type holdingBroker struct {
	*scriptBroker
	hold    atomic.Bool
	waiting chan struct{}
}

func (h *holdingBroker) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	if h.hold.Load() && strings.HasPrefix(subject, "busmesh.default.svc.") {
		h.waiting <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	return h.scriptBroker.PublishReturnable(ctx, subject, data, token, returned)
}

// TestCallEndedBeforeSending: a call whose caller went away while its
// request waited to be published failed neither at the broker nor at the
// service: it opens no circuit, even one that opens at the first failure.
func TestCallEndedBeforeSending(t *testing.T) {
	hb := &holdingBroker{
		scriptBroker: &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{resp: ok200()} }},
		waiting:      make(chan struct{}),
	}
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(5 * time.Second)
	brk := config.NewServiceBreaker()
	brk.ConsecutiveFailures = 1
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: hb})
	if err != nil {
		t.Fatal(err)
	}
	hb.hold.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-hb.waiting
		cancel()
	}()
	a.Handler("orders").ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://orders/x", nil).WithContext(ctx))
	hb.hold.Store(false)
	if w := call(a, "GET", nil); w.Code != 200 {
		t.Fatalf("the call after one its caller abandoned before it was sent: %d %s=%q, want 200", w.Code, HeaderError, w.Header().Get(HeaderError))
	}
}

// resendFailingBroker hands back every request (no responders); from the
// second on, its publish fails with err, or waits for the call to end when
// err is nil.
type resendFailingBroker struct {
	loopBroker
	published atomic.Int32
	err       error
}

func (r *resendFailingBroker) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	if r.published.Add(1) == 1 {
		go returned(token)
		return nil
	}
	if r.err != nil {
		return r.err
	}
	<-ctx.Done()
	return ctx.Err()
}

// TestResendFailureIsTheCallsEnd: a request the broker handed back is sent
// to another instance; when that send fails, the caller hears why it
// failed (its deadline passed, the broker failed), not no-responders.
func TestResendFailureIsTheCallsEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		reason reason.Reason
	}{
		{"deadline", nil, http.StatusGatewayTimeout, reason.Timeout},
		{"broker", errors.New("connection lost"), http.StatusServiceUnavailable, reason.BrokerUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.NewAmbassador()
			cfg.Service = "web"
			cfg.Timeout = config.Duration(200 * time.Millisecond)
			cfg.Services = map[string]*config.ServicePolicy{"orders": {LB: config.LBDirect, Retry: &config.Retry{Attempts: 1}}}
			reg := discovery.NewRegistry(nil)
			for _, inst := range []string{"orders-1", "orders-2"} {
				reg.Apply(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders", Instance: inst,
					Sidecar: inst, Healthy: true, Concurrency: 8, IntervalMs: 60000})
			}
			b := &resendFailingBroker{err: tc.err}
			a, err := New(t.Context(), Options{Config: cfg, Sidecar: "t", Broker: b, Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			w := httptest.NewRecorder()
			a.Handler("orders").ServeHTTP(w, httptest.NewRequest("GET", "http://orders/", nil))
			if got := w.Header().Get("X-Busmesh-Error"); w.Code != tc.status || got != tc.reason.String() {
				t.Errorf("status %d, X-Busmesh-Error %q; want %d, %q", w.Code, got, tc.status, tc.reason)
			}
			if n := b.published.Load(); n != 2 {
				t.Errorf("%d publishes, want 2 (the first handed back, one resend)", n)
			}
		})
	}
}

// TestHeadWaitEndsSlotWait: an event-stream call (no deadline, its head
// awaited for the service's timeout) whose wait for a call slot outlasts
// that timeout is answered 504 timeout, as a call with a deadline is, not
// as one whose caller went away.
func TestHeadWaitEndsSlotWait(t *testing.T) {
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{} }} // never answered
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(300 * time.Millisecond)
	brk := config.NewServiceBreaker()
	brk.MaxConcurrent, brk.MaxPending = 1, 4
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk, Retry: &config.Retry{Attempts: 1}}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan int, 1)
	go func() { // holds the one slot until its deadline, 2 s
		r := httptest.NewRequest("GET", "http://orders/x", nil)
		r.Header.Set(HeaderTimeout, "2s")
		w := httptest.NewRecorder()
		a.Handler("orders").ServeHTTP(w, r)
		held <- w.Code
	}()
	waitFor(t, func() bool { return len(sb.requests()) == 1 })
	r := httptest.NewRequest("GET", "http://orders/events", nil)
	r.Header.Set("Accept", "text/event-stream")
	w := httptest.NewRecorder()
	a.Handler("orders").ServeHTTP(w, r)
	if w.Code != http.StatusGatewayTimeout || w.Header().Get(HeaderError) != "timeout" {
		t.Errorf("event stream waiting for a slot past its head's timeout: %d %s=%q; want 504 timeout", w.Code, HeaderError, w.Header().Get(HeaderError))
	}
	if code := <-held; code != http.StatusGatewayTimeout {
		t.Errorf("the call holding the slot: %d, want 504", code)
	}
}

// TestHeadWaitEndsDiscoveryWait: an event-stream call to a routed service
// not heard of yet waits for discovery (AwaitFirst) no longer than its
// head may take, and is then answered 504 timeout, as a call whose
// deadline ended that wait is, not no-healthy-instances.
func TestHeadWaitEndsDiscoveryWait(t *testing.T) {
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(300 * time.Millisecond)
	reg := discovery.NewRegistryWith(discovery.Options{Interval: 5 * time.Second})
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: &scriptBroker{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	reg.Route([]string{"orders"})
	r := httptest.NewRequest("GET", "http://orders/events", nil)
	r.Header.Set("Accept", "text/event-stream")
	w := httptest.NewRecorder()
	start := time.Now()
	a.Handler("orders").ServeHTTP(w, r)
	if w.Code != http.StatusGatewayTimeout || w.Header().Get(HeaderError) != "timeout" {
		t.Errorf("event stream to a service not heard of yet: %d %s=%q after %v; want 504 timeout", w.Code, HeaderError, w.Header().Get(HeaderError), time.Since(start))
	}
}
