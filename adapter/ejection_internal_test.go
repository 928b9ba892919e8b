package adapter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/envelope"
)

// queueBroker counts the queue groups the adapter is in.
type queueBroker struct {
	answerBroker
	mu     sync.Mutex
	groups int
}

type queueSub struct{ b *queueBroker }

func (s queueSub) Unsubscribe() error {
	s.b.mu.Lock()
	s.b.groups--
	s.b.mu.Unlock()
	return nil
}

func (b *queueBroker) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	b.mu.Lock()
	b.groups++
	b.mu.Unlock()
	return queueSub{b}, nil
}

func (b *queueBroker) inGroups() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.groups
}

// peerList is a fixed view of the service's instances.
type peerList []discovery.Instance

func (p peerList) Instances(string) []discovery.Instance { return p }

// livePeers is a view of the service's instances that a test changes.
type livePeers struct {
	mu   sync.Mutex
	list peerList
}

func (p *livePeers) Instances(string) []discovery.Instance {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.list
}

func (p *livePeers) set(l peerList) {
	p.mu.Lock()
	p.list = l
	p.mu.Unlock()
}

func peers(healthy ...bool) peerList {
	var out peerList
	for i, h := range healthy {
		out = append(out, discovery.Instance{Service: "orders", Name: "i-" + string(rune('1'+i)), Healthy: h})
	}
	return out
}

// TestSelfEjection: an adapter whose application answers 503 three times
// in a row leaves its queue group while other instances are healthy,
// comes back when its time is up, and stays when it is the last healthy
// one or its service has its share out; a shut-down adapter never
// rejoins.
func TestSelfEjection(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer app.Close()
	ejection := 300 * time.Millisecond
	start := func(t *testing.T, p Peers) (*Adapter, *queueBroker) {
		cfg := config.NewAdapter()
		cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
		cfg.Outlier = &config.Outlier{Consecutive: 3, BaseEjection: config.Duration(ejection),
			MaxEjection: config.Duration(time.Second), MaxEjectedPercent: 10}
		b := &queueBroker{}
		a, err := New(Options{Config: cfg, Sidecar: "t", Broker: b})
		if err != nil {
			t.Fatal(err)
		}
		if p != nil {
			a.SetPeers(p)
		}
		if err := a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
		return a, b
	}
	id := uint64(0)
	// call serves one request and waits for its answer: the calls end in
	// the order they are made.
	call := func(a *Adapter, path string) {
		t.Helper()
		id++
		req := envelope.Request{ID: id, Source: "caller", Service: "orders", Method: "GET", Path: path,
			ReplyTo: "busmesh.default.inbox.caller", Protocol: envelope.ProtocolHTTP, Deadline: time.Now().Add(5 * time.Second).UnixNano()}
		a.handleRequest(context.Background(), req.AppendEnvelope(nil))
		sink := &a.broker.(*queueBroker).answerBroker
		for range 500 {
			sink.mu.Lock()
			n := len(sink.answers)
			done := n > 0 && sink.answers[n-1].ID == id
			sink.mu.Unlock()
			if done {
				time.Sleep(time.Millisecond) // the answer is sent before the call is counted
				return
			}
			time.Sleep(time.Millisecond)
		}
		t.Fatalf("no answer to call %d", id)
	}
	waitGroups := func(t *testing.T, b *queueBroker, want int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for b.inGroups() != want {
			if time.Now().After(deadline) {
				t.Fatalf("in %d queue groups, want %d", b.inGroups(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	outcome := func(a *Adapter, o string) float64 {
		return testutil.ToFloat64(a.metrics.Resilience.SelfEjections.WithLabelValues("orders", o))
	}

	t.Run("ejected-and-back", func(t *testing.T) {
		a, b := start(t, peers(true, true, true))
		waitGroups(t, b, 1, time.Second)
		call(a, "/fail")
		call(a, "/ok") // a success in between starts the count over
		for range 3 {
			call(a, "/fail")
		}
		waitGroups(t, b, 0, 2*time.Second)
		if outcome(a, "ejected") != 1 {
			t.Errorf("ejections counted %v, want 1", outcome(a, "ejected"))
		}
		waitGroups(t, b, 1, 2*time.Second) // back after 300ms
	})
	t.Run("two-failures-stay", func(t *testing.T) {
		a, b := start(t, peers(true, true, true))
		for range 2 {
			call(a, "/fail")
		}
		call(a, "/ok")
		call(a, "/fail")
		time.Sleep(100 * time.Millisecond)
		if b.inGroups() != 1 || outcome(a, "ejected")+outcome(a, "kept") != 0 {
			t.Errorf("after failures not in a row: %d groups, ejected %v kept %v", b.inGroups(), outcome(a, "ejected"), outcome(a, "kept"))
		}
	})
	for name, p := range map[string]Peers{
		"last-healthy":  peers(true, false),
		"share-out":     peers(true, true, true, false),
		"peers-unknown": nil,
	} {
		t.Run(name, func(t *testing.T) {
			a, b := start(t, p)
			for range 3 {
				call(a, "/fail")
			}
			deadline := time.Now().Add(2 * time.Second)
			for outcome(a, "kept") == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if outcome(a, "kept") != 1 || b.inGroups() != 1 {
				t.Errorf("kept %v, in %d queue groups: want kept 1, still in the group", outcome(a, "kept"), b.inGroups())
			}
		})
	}
	t.Run("decided-together", func(t *testing.T) {
		// i-0 and i-1 stepped aside at once, over the share of one: i-1,
		// second by name, comes back long before its time is up.
		live := &livePeers{list: peers(true, true, true)}
		ejection = time.Minute
		defer func() { ejection = 300 * time.Millisecond }()
		a, b := start(t, live)
		for range 3 {
			call(a, "/fail")
		}
		waitGroups(t, b, 0, 2*time.Second)
		live.set(peerList{{Name: "i-0"}, {Name: "i-1"}, {Name: "i-2", Healthy: true}})
		waitGroups(t, b, 1, 2*time.Second)
	})
	t.Run("shutdown-while-out", func(t *testing.T) {
		a, b := start(t, peers(true, true, true))
		for range 3 {
			call(a, "/fail")
		}
		waitGroups(t, b, 0, 2*time.Second)
		if err := a.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // past the ejection
		if n := b.inGroups(); n != 0 {
			t.Errorf("a shut-down adapter rejoined %d queue groups", n)
		}
	})
}
