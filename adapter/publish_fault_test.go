package adapter_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/adapter"
	"github.com/busmesh/busmesh/ambassador"
	"github.com/busmesh/busmesh/broker"
	_ "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// failingAnswers is a broker whose first publish of an answer fails, as a
// broker that drops a connection or refuses a message would.
type failingAnswers struct {
	broker.Broker
	armed, failed atomic.Bool
}

var errInjected = errors.New("injected publish failure")

func (f *failingAnswers) Publish(ctx context.Context, subject string, data []byte) error {
	if k, _, err := envelope.Unwrap(data); err == nil && k == envelope.KindResponse && f.armed.Load() && f.failed.CompareAndSwap(false, true) {
		return errInjected
	}
	return f.Broker.Publish(ctx, subject, data)
}

// TestFailedAnswerReachesCaller: an answer the adapter cannot publish
// reaches its caller as a mesh error at once, with its reason, counted and
// logged — not as a wait for the deadline.
func TestFailedAnswerReachesCaller(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	b, err := broker.Open(ctx, "embedded", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "fine") }))
	defer app.Close()

	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", app.URL
	m := telemetry.NewMetrics()
	faulty := &failingAnswers{Broker: b}
	ad, err := adapter.New(adapter.Options{Config: cfg, Sidecar: "callee", Broker: faulty, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := ad.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer ad.Shutdown(context.Background())
	amb, err := ambassador.New(ctx, ambassador.Options{Config: config.NewAmbassador(), Sidecar: "caller", Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	h := amb.Handler("orders")
	// A first call warms the connections; the next answer's publish fails.
	warm := httptest.NewRecorder()
	h.ServeHTTP(warm, httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	if warm.Code != 200 {
		t.Fatalf("warm-up call: %d", warm.Code)
	}
	faulty.armed.Store(true)

	req := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
	req.Header.Set(ambassador.HeaderTimeout, "10s")
	w := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(w, req)
	took := time.Since(start)
	if w.Code != http.StatusBadGateway || w.Header().Get(ambassador.HeaderError) != "stream-failed" ||
		!strings.Contains(w.Body.String(), errInjected.Error()) {
		t.Fatalf("status %d, X-Busmesh-Error %q, body %q; want 502 stream-failed naming the failure",
			w.Code, w.Header().Get(ambassador.HeaderError), w.Body.String())
	}
	if took > 100*time.Millisecond {
		t.Errorf("the caller learnt of the failed answer after %v, want within 100ms", took)
	}
	if got := testutil.ToFloat64(m.PublishErrors.WithLabelValues("adapter", "response")); got != 1 {
		t.Errorf("busmesh_publish_errors_total{adapter,response} = %v, want 1", got)
	}
	// The next call is answered as usual.
	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil).WithContext(ctx))
	if w.Code != 200 || w.Body.String() != "fine" {
		t.Errorf("next call: %d %q, want 200 fine", w.Code, w.Body.String())
	}
}
