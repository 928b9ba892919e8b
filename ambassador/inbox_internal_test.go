package ambassador

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
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
