package adapter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// answerBroker keeps the answers published to the caller's inbox.
type answerBroker struct {
	mu      sync.Mutex
	answers []envelope.Response
}

func (s *answerBroker) Publish(_ context.Context, subject string, data []byte) error {
	if subject != "busmesh.default.inbox.caller" {
		return nil
	}
	env, err := envelope.Open(data)
	if err != nil || env.Kind != envelope.KindResponse {
		return err
	}
	var r envelope.Response
	if err := r.Unmarshal(append([]byte(nil), env.Msg...)); err != nil {
		return err
	}
	s.mu.Lock()
	s.answers = append(s.answers, r)
	s.mu.Unlock()
	return nil
}

func (s *answerBroker) Subscribe(context.Context, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *answerBroker) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *answerBroker) Close() error { return nil }

// answer returns the answer to call id, if one was published.
func (s *answerBroker) answer(id uint64) (envelope.Response, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.answers {
		if r.ID == id {
			return r, true
		}
	}
	return envelope.Response{}, false
}

// TestDuplicateSuppression: a retry of a call this adapter answered is
// answered from the record, with the retry's id, and the application is
// called once; a call without attempt_of, or whose answer was a 5xx, runs
// again.
func TestDuplicateSuppression(t *testing.T) {
	var calls atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.URL.Path == "/busy" {
			w.WriteHeader(503)
			return
		}
		if r.URL.Path == "/broken" {
			w.WriteHeader(500)
			return
		}
		w.Write([]byte("answer " + strconv.FormatInt(n, 10)))
	}))
	defer app.Close()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
	sink := &answerBroker{}
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: sink})
	if err != nil {
		t.Fatal(err)
	}
	send := func(id, attemptOf uint64, path string) envelope.Response {
		t.Helper()
		req := envelope.Request{ID: id, AttemptOf: attemptOf, Source: "caller", Service: "orders", Method: "GET", Path: path,
			ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP, Deadline: time.Now().Add(5 * time.Second).UnixNano()}
		a.handleRequest(context.Background(), req.AppendEnvelope(nil))
		for range 500 {
			sink.mu.Lock()
			for _, r := range sink.answers {
				if r.ID == id {
					sink.mu.Unlock()
					return r
				}
			}
			sink.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("no answer to call %d", id)
		return envelope.Response{}
	}
	first := send(10, 10, "/x")
	retry := send(11, 10, "/x")
	if calls.Load() != 1 {
		t.Errorf("application called %d times, want once", calls.Load())
	}
	if string(retry.Body) != string(first.Body) || retry.Status != 200 {
		t.Errorf("retry answered %d %q, want the first answer %q", retry.Status, retry.Body, first.Body)
	}
	if other := send(20, 20, "/x"); string(other.Body) == string(first.Body) {
		t.Error("another call answered from the record")
	}
	send(30, 0, "/x")
	send(31, 0, "/x")
	if calls.Load() != 4 {
		t.Errorf("calls without attempt_of: application called %d times in all, want 4", calls.Load())
	}
	send(40, 40, "/busy")
	if busy := send(41, 40, "/busy"); busy.Status != 503 || calls.Load() != 6 {
		t.Errorf("retry of a 503: status %d, %d application calls; want it served again (6)", busy.Status, calls.Load())
	}
	// A caller may retry on any 5xx (retry.on: [5xx]): a 500 is not kept.
	send(50, 50, "/broken")
	if broken := send(51, 50, "/broken"); broken.Status != 500 || calls.Load() != 8 {
		t.Errorf("retry of a 500: status %d, %d application calls; want it served again (8)", broken.Status, calls.Load())
	}
	a.pool.close()
	a.pool.wait()
}

// TestResultsBounded: the record keeps at most maxResults answers, and
// none past resultRetention.
func TestResultsBounded(t *testing.T) {
	var r results
	out := &envelope.Response{Status: 200, Body: []byte("x")}
	for i := range maxResults + 100 {
		r.keep(&envelope.Request{ID: uint64(i + 1), AttemptOf: uint64(i + 1), Source: "c"}, out)
	}
	if n := len(r.m); n != maxResults {
		t.Errorf("%d records, want %d", n, maxResults)
	}
	if _, ok := r.find(callKey{"c", 1}, "", time.Now().UnixNano()); ok {
		t.Error("the oldest record outlived the count bound")
	}
	if _, ok := r.find(callKey{"c", maxResults + 100}, "", time.Now().UnixNano()); !ok {
		t.Error("the newest record was not found")
	}
	if _, ok := r.find(callKey{"c", maxResults + 100}, "another-service", time.Now().UnixNano()); ok {
		t.Error("a record found for another service than the caller's")
	}
	if _, ok := r.find(callKey{"c", maxResults + 100}, "", time.Now().Add(resultRetention+time.Second).UnixNano()); ok {
		t.Error("a record outlived resultRetention")
	}
	if len(r.queue)-r.head != len(r.m) {
		t.Errorf("queue holds %d, map %d", len(r.queue)-r.head, len(r.m))
	}
}
