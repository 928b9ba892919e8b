package ambassador

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
)

// scriptBroker plays the adapters of one service: every request published
// to a service subject is handed to script, which says what becomes of
// it, as the n-th request seen (from 1).
type scriptBroker struct {
	mu     sync.Mutex
	inbox  broker.Handler
	seen   []envelope.Request
	frames int
	got    map[uint64][]byte // request body frames' data, by call id
	ended  map[uint64]bool
	script func(n int, req *envelope.Request) scripted
}

// scripted is what becomes of a request: answered (with resp), returned
// undelivered, or left without an answer.
type scripted struct {
	resp     *envelope.Response
	returned bool
	accept   bool // accept a streaming request, then answer when its body ended
}

func (s *scriptBroker) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	req, ok, err := serviceRequest(subject, data)
	if !ok {
		return err
	}
	req.Body = bytes.Clone(req.Body)
	req.Headers = nil
	s.mu.Lock()
	s.seen = append(s.seen, req)
	n := len(s.seen)
	h := s.inbox
	s.mu.Unlock()
	out := s.script(n, &req)
	switch {
	case out.returned:
		go returned(token)
	case out.accept:
		f := envelope.Frame{ID: req.ID, ReplyTo: "busmesh.default.adapter.x", WindowUpdate: stream.DefaultWindow}
		go h(ctx, f.AppendEnvelope(nil))
	case out.resp != nil:
		r := *out.resp
		r.ID = req.ID
		go h(ctx, r.AppendEnvelope(nil))
	}
	return nil
}

func (s *scriptBroker) Publish(ctx context.Context, subject string, data []byte) error {
	if strings.HasPrefix(subject, "busmesh.default.adapter.") {
		_, msg, err := envelope.Unwrap(data)
		if err != nil {
			return err
		}
		var f envelope.Frame
		if err := f.Unmarshal(msg); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.frames++
		if s.got == nil {
			s.got, s.ended = map[uint64][]byte{}, map[uint64]bool{}
		}
		s.got[f.ID] = append(s.got[f.ID], f.Data...)
		s.ended[f.ID] = s.ended[f.ID] || f.End
		return nil
	}
	return s.PublishReturnable(ctx, subject, data, 0, func(uint64) {})
}

func (s *scriptBroker) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	if subject != "busmesh.default.inbox.web-1" {
		return nopSub{}, nil // the mirror inbox, discovery
	}
	s.mu.Lock()
	s.inbox = h
	s.mu.Unlock()
	return nopSub{}, nil
}

func (s *scriptBroker) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *scriptBroker) Close() error { return nil }

// MaxMessageBytes is small, so bodies of a few KiB stream.
func (s *scriptBroker) MaxMessageBytes() int { return 8 << 10 }

func (s *scriptBroker) requests() []envelope.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]envelope.Request(nil), s.seen...)
}

func ok200() *envelope.Response { return &envelope.Response{Status: 200, Body: []byte("ok")} }
func app503() *envelope.Response {
	return &envelope.Response{Status: 503, Body: []byte("busy")}
}

func newRetryAmbassador(t *testing.T, sb *scriptBroker, retry *config.Retry) *Ambassador {
	t.Helper()
	cfg := config.NewAmbassador()
	cfg.Service = "web"
	cfg.Timeout = config.Duration(2 * time.Second)
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Retry: retry}}
	a, err := New(context.Background(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func call(a *Ambassador, method string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://orders/x", body)
	w := httptest.NewRecorder()
	a.Handler("orders").ServeHTTP(w, r)
	return w
}

func TestRetry(t *testing.T) {
	retry := func(edit func(*config.Retry)) *config.Retry {
		r := config.NewRetry()
		r.Backoff = config.Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(2 * time.Millisecond)}
		if edit != nil {
			edit(r)
		}
		return r
	}
	tests := []struct {
		name      string
		retry     *config.Retry
		method    string
		script    func(n int, req *envelope.Request) scripted
		status    int
		attempts  int
		wantError string // X-Busmesh-Error
	}{
		{"503 then ok, GET", retry(nil), "GET",
			func(n int, _ *envelope.Request) scripted {
				if n == 1 {
					return scripted{resp: app503()}
				}
				return scripted{resp: ok200()}
			}, 200, 2, ""},
		{"503 on a POST is not retried", retry(nil), "POST",
			func(int, *envelope.Request) scripted { return scripted{resp: app503()} }, 503, 1, ""},
		{"POST retried when the route says so", retry(func(r *config.Retry) { r.Methods = []string{"*"} }), "POST",
			func(n int, _ *envelope.Request) scripted {
				if n < 3 {
					return scripted{resp: app503()}
				}
				return scripted{resp: ok200()}
			}, 200, 3, ""},
		{"no-responders retried on any method", retry(nil), "POST",
			func(n int, _ *envelope.Request) scripted {
				if n == 1 {
					return scripted{returned: true}
				}
				return scripted{resp: ok200()}
			}, 200, 2, ""},
		{"attempts bound the tries", retry(nil), "GET",
			func(int, *envelope.Request) scripted { return scripted{resp: app503()} }, 503, 3, ""},
		{"500 not retried by default", retry(nil), "GET",
			func(int, *envelope.Request) scripted { return scripted{resp: &envelope.Response{Status: 500}} }, 500, 1, ""},
		{"500 retried on 5xx", retry(func(r *config.Retry) { r.On = []string{config.Retry5xx} }), "GET",
			func(n int, _ *envelope.Request) scripted {
				if n == 1 {
					return scripted{resp: &envelope.Response{Status: 500}}
				}
				return scripted{resp: ok200()}
			}, 200, 2, ""},
		{"app-unreachable retried", retry(nil), "GET",
			func(n int, _ *envelope.Request) scripted {
				if n == 1 {
					return scripted{resp: &envelope.Response{Status: 502, Error: "app-unreachable"}}
				}
				return scripted{resp: ok200()}
			}, 200, 2, ""},
		{"per-try timeout retried when asked", retry(func(r *config.Retry) {
			r.PerTryTimeout = config.Duration(50 * time.Millisecond)
			r.On = append(r.On, config.RetryTimeout)
		}), "GET",
			func(n int, _ *envelope.Request) scripted {
				if n == 1 {
					return scripted{} // lost
				}
				return scripted{resp: ok200()}
			}, 200, 2, ""},
		{"per-try timeout not retried unless asked", retry(func(r *config.Retry) {
			r.PerTryTimeout = config.Duration(50 * time.Millisecond)
		}), "GET",
			func(n int, _ *envelope.Request) scripted {
				if n == 1 {
					return scripted{}
				}
				return scripted{resp: ok200()}
			}, 504, 1, "timeout"},
		{"attempts 1 is off", retry(func(r *config.Retry) { r.Attempts = 1 }), "GET",
			func(int, *envelope.Request) scripted { return scripted{resp: app503()} }, 503, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := &scriptBroker{script: tt.script}
			a := newRetryAmbassador(t, sb, tt.retry)
			w := call(a, tt.method, nil)
			if w.Code != tt.status {
				t.Errorf("status %d, want %d (%s)", w.Code, tt.status, w.Body.String())
			}
			if got := w.Header().Get(HeaderError); got != tt.wantError {
				t.Errorf("%s %q, want %q", HeaderError, got, tt.wantError)
			}
			reqs := sb.requests()
			if len(reqs) != tt.attempts {
				t.Fatalf("%d attempts, want %d", len(reqs), tt.attempts)
			}
			// Every attempt has an id of its own; AttemptOf, when set, is
			// the first attempt's on all of them.
			ids := map[uint64]bool{}
			for _, r := range reqs {
				if ids[r.ID] {
					t.Errorf("id %d used twice", r.ID)
				}
				ids[r.ID] = true
				if r.AttemptOf != 0 && r.AttemptOf != reqs[0].ID {
					t.Errorf("attempt_of %d, want the first attempt's id %d", r.AttemptOf, reqs[0].ID)
				}
			}
			if tt.method == "GET" && tt.retry.Attempts > 1 && reqs[0].AttemptOf != reqs[0].ID {
				t.Errorf("a GET's attempt_of is %d, want its first id %d", reqs[0].AttemptOf, reqs[0].ID)
			}
			if tt.method == "POST" && tt.retry.Methods[0] != "*" && reqs[0].AttemptOf != 0 {
				t.Errorf("a POST not retried after delivery carries attempt_of %d", reqs[0].AttemptOf)
			}
			if a.inbox.pending() != 0 {
				t.Errorf("%d calls left in the inbox", a.inbox.pending())
			}
		})
	}
}

// TestRetryBudget: with every answer a 503, the retries stay within the
// budget's ratio of the calls plus its floor.
func TestRetryBudget(t *testing.T) {
	r := config.NewRetry()
	r.Attempts = 5
	r.Backoff = config.Backoff{Base: config.Duration(time.Microsecond), Max: config.Duration(time.Microsecond)}
	r.Budget = config.Budget{Percent: 20, MinPerSecond: 1}
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{resp: app503()} }}
	a := newRetryAmbassador(t, sb, r)
	const calls = 500
	for range calls {
		if w := call(a, "GET", nil); w.Code != 503 {
			t.Fatalf("status %d, want 503", w.Code)
		}
	}
	attempts := len(sb.requests())
	// The floor is 1/s over the 10 s window.
	limit := calls + calls*20/100 + 10
	if attempts > limit {
		t.Errorf("%d attempts for %d calls, over the budget's %d", attempts, calls, limit)
	}
	if attempts < calls+calls*20/100 {
		t.Errorf("%d attempts for %d calls: the budget allowed %d retries", attempts, calls, calls*20/100)
	}
}

// TestRetryReplaysBody: a streamed body under the replay limit is sent in
// whole again; one over it is not retried once it has streamed.
func TestRetryReplaysBody(t *testing.T) {
	for _, tt := range []struct {
		name     string
		size     int
		attempts int
		status   int
	}{
		{"fits the replay buffer", 40 << 10, 2, 200},
		{"over the replay buffer", 200 << 10, 1, 503},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := config.NewRetry()
			r.Methods = []string{"*"}
			r.Backoff = config.Backoff{Base: config.Duration(time.Millisecond), Max: config.Duration(time.Millisecond)}
			var sb *scriptBroker
			sb = &scriptBroker{script: func(n int, req *envelope.Request) scripted {
				if !req.More {
					t.Errorf("request not streamed")
				}
				if n == 1 {
					// Accept, let the body stream, then fail with a 503.
					go func() {
						time.Sleep(100 * time.Millisecond)
						sb.mu.Lock()
						h := sb.inbox
						sb.mu.Unlock()
						resp := app503()
						resp.ID = req.ID
						h(context.Background(), resp.AppendEnvelope(nil))
					}()
					return scripted{accept: true}
				}
				// Answer once the whole body has come again.
				first := len(req.Body)
				go func() {
					for range 200 {
						sb.mu.Lock()
						rest, end, h := len(sb.got[req.ID]), sb.ended[req.ID], sb.inbox
						sb.mu.Unlock()
						if end {
							resp := ok200()
							if first+rest != tt.size {
								resp.Status = 400
							}
							resp.ID = req.ID
							h(context.Background(), resp.AppendEnvelope(nil))
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
				return scripted{accept: true}
			}}
			a := newRetryAmbassador(t, sb, r)
			body := bytes.Repeat([]byte("b"), tt.size)
			w := call(a, "POST", bytes.NewReader(body))
			if w.Code != tt.status {
				t.Errorf("status %d, want %d", w.Code, tt.status)
			}
			if n := len(sb.requests()); n != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := config.Backoff{Base: config.Duration(10 * time.Millisecond), Max: config.Duration(100 * time.Millisecond)}
	for n, want := range map[int]time.Duration{1: 10 * time.Millisecond, 2: 20 * time.Millisecond, 4: 80 * time.Millisecond, 5: 100 * time.Millisecond, 40: 100 * time.Millisecond} {
		for range 50 {
			got := backoff(b, n)
			if got < want/2 || got > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, got, want/2, want)
			}
		}
	}
}

// TestEndedCallSpendsNoRetry: a call without a deadline whose head's wait
// ends during a keyed attempt with its own per-try timeout is not retried,
// and takes nothing from the service's retry budget.
func TestEndedCallSpendsNoRetry(t *testing.T) {
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{} }} // never answered
	r := config.NewRetry()
	r.PerTryTimeout = config.Duration(time.Second) // longer than the head may take
	r.On = append(r.On, config.RetryTimeout)
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(300 * time.Millisecond)
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Retry: r}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "http://orders/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	w := httptest.NewRecorder()
	a.Handler("orders").ServeHTTP(w, req)
	if w.Code != 504 || len(sb.requests()) != 1 {
		t.Fatalf("%d, %d attempts; want 504 after one attempt", w.Code, len(sb.requests()))
	}
	s, ok := a.services.Load("orders")
	if !ok {
		t.Fatal("no state for service orders")
	}
	if _, retries := s.(*serviceState).budget.counters.sum(time.Now().UnixNano()); retries != 0 {
		t.Errorf("%d retries taken from the budget for a call that had ended", retries)
	}
}
