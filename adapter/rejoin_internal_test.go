package adapter

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// downBroker is a broker whose queue subscribes fail while it is told to,
// as a real one's do during an outage. It counts the queue groups joined
// and keeps the health of the instance's last announcement.
type downBroker struct {
	mu        sync.Mutex
	failNext  int // queue subscribes still to fail
	failed    int // queue subscribes failed so far
	groups    int
	announced int // announcements (hello) seen
	healthy   bool
}

var errBrokerDown = errors.New("broker down (test)")

func (b *downBroker) Publish(_ context.Context, subject string, data []byte) error {
	if subject != broker.NewSubjects("").Discovery("orders") {
		return nil
	}
	var m busmeshv1.Announcement
	if err := proto.Unmarshal(data, &m); err != nil {
		return err
	}
	if m.Kind == busmeshv1.Announcement_KIND_HELLO {
		b.mu.Lock()
		b.announced++
		b.healthy = m.Healthy
		b.mu.Unlock()
	}
	return nil
}

func (b *downBroker) Subscribe(context.Context, string, broker.Handler) (broker.Subscription, error) {
	return downSub{}, nil
}

func (b *downBroker) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failNext > 0 {
		b.failNext--
		b.failed++
		return nil, errBrokerDown
	}
	b.groups++
	return downSub{b}, nil
}

func (b *downBroker) Close() error { return nil }

// fail makes the next n queue subscribes fail.
func (b *downBroker) fail(n int) {
	b.mu.Lock()
	b.failNext = n
	b.mu.Unlock()
}

// state is the queue groups joined, the health last announced, and the
// queue subscribes failed so far.
func (b *downBroker) state() (groups int, healthy bool, failed int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.groups, b.healthy && b.announced > 0, b.failed
}

// downSub is a subscription to a downBroker; a queue group's leaves it.
type downSub struct{ b *downBroker }

func (s downSub) Unsubscribe() error {
	if s.b != nil {
		s.b.mu.Lock()
		s.b.groups--
		s.b.mu.Unlock()
	}
	return nil
}

// waitState polls b until it is in its queue group and announced healthy
// (in true) or out and announced unhealthy (in false), failing the test
// after within.
func waitState(t *testing.T, b *downBroker, in bool, within time.Duration) {
	t.Helper()
	want := 0
	if in {
		want = 1
	}
	deadline := time.Now().Add(within)
	for {
		groups, healthy, failed := b.state()
		if groups == want && healthy == in {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d queue groups, announced healthy %v (%d queue subscribes failed); want %d and %v",
				within, groups, healthy, failed, want, in)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startDown starts an adapter of "orders" on a downBroker.
func startDown(t *testing.T, cfg *config.Adapter) (*Adapter, *downBroker) {
	t.Helper()
	b := &downBroker{}
	// Announced at a change of health only, so the last announcement is
	// the adapter's latest word.
	a, err := New(Options{Config: cfg, Sidecar: "t", Broker: b, Announce: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown(context.Background()) })
	waitState(t, b, true, 2*time.Second)
	return a, b
}

// rejoinBound is how soon an adapter must be back once the broker takes
// subscribes again: three failed attempts back off 100+200+400 ms at most.
const rejoinBound = 3 * time.Second

// TestRejoinAfterBrokerOutage: an adapter whose application recovers (or
// whose self-ejection ends) while the broker refuses subscribes keeps
// trying, and rejoins its queue group and announces itself healthy once
// the broker is back — not only after the next change of health.
func TestRejoinAfterBrokerOutage(t *testing.T) {
	t.Run("health check recovers", func(t *testing.T) {
		var sick atomic.Bool
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/health" && sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.Write([]byte("ok"))
		}))
		defer app.Close()
		cfg := config.NewAdapter()
		cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
		cfg.Health = &config.Health{HTTP: "/health", Interval: config.Duration(10 * time.Millisecond),
			Timeout: config.Duration(time.Second), UnhealthyAfter: 1, HealthyAfter: 1}
		_, b := startDown(t, cfg)

		sick.Store(true)
		waitState(t, b, false, 2*time.Second)
		b.fail(3) // the broker is down when the application recovers
		sick.Store(false)
		waitState(t, b, true, rejoinBound)
		if _, _, failed := b.state(); failed != 3 {
			t.Errorf("%d queue subscribes failed, want 3", failed)
		}
	})

	t.Run("self-ejection ends", func(t *testing.T) {
		cfg := config.NewAdapter()
		cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", "http://127.0.0.1:1"
		a, b := startDown(t, cfg)

		if !a.setEjected(true) {
			t.Fatal("setEjected: adapter shut down")
		}
		waitState(t, b, false, time.Second)
		b.fail(2)
		a.setEjected(false) // stepBack, while the broker is down
		waitState(t, b, true, rejoinBound)
	})

	t.Run("retry ends when unhealthy again, and at shutdown", func(t *testing.T) {
		cfg := config.NewAdapter()
		cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", "http://127.0.0.1:1"
		a, b := startDown(t, cfg)
		// retrying is the running retry's end, nil when none runs.
		retrying := func() chan struct{} {
			a.gate.mu.Lock()
			defer a.gate.mu.Unlock()
			return a.gate.rejoinDone
		}
		// retried waits until the broker has refused n queue subscribes.
		retried := func(n int) {
			t.Helper()
			deadline := time.Now().Add(rejoinBound)
			for _, _, failed := b.state(); failed < n; _, _, failed = b.state() {
				if time.Now().After(deadline) {
					t.Fatalf("%d queue subscribes tried, want %d", failed, n)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}

		a.setHealthy(false)
		b.fail(1 << 30) // down for good
		a.setHealthy(true)
		retried(2) // the first join, then the retry's
		done := retrying()
		if done == nil {
			t.Fatal("no retry running after a failed join")
		}
		a.setHealthy(false)
		select {
		case <-done:
		case <-time.After(rejoinMax + time.Second): // at most one backoff
			t.Fatal("the retry went on after the application turned unhealthy")
		}
		if groups, healthy, _ := b.state(); groups != 0 || healthy {
			t.Errorf("unhealthy: %d queue groups, announced healthy %v", groups, healthy)
		}

		_, _, before := b.state()
		a.setHealthy(true)
		retried(before + 2)
		done = retrying()
		if done == nil {
			t.Fatal("no retry running after a failed join")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = a.Shutdown(ctx)
		select {
		case <-done:
		default:
			t.Fatal("the retry still runs after Shutdown returned")
		}
		if groups, _, _ := b.state(); groups != 0 {
			t.Errorf("%d queue groups after Shutdown", groups)
		}
	})
}
