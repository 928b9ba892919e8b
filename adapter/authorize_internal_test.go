package adapter

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestAuthzCallersBounded: without identities the caller of an allow rule
// is whatever a request names; the decisions' caller label takes the
// first maxCallers of them, the rest as unknown, as the requests' does.
func TestAuthzCallersBounded(t *testing.T) {
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target = "orders", "i-1", "http://127.0.0.1:1"
	cfg.Allow = []config.AllowRule{{From: "web", Methods: []string{"GET"}, Paths: []string{"/**"}}}
	m := telemetry.NewMetrics()
	a, err := New(Options{Config: cfg, Sidecar: "orders-sc", Broker: &recordingBroker{out: map[string][][]byte{}}, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 * maxCallers {
		req := &envelope.Request{SourceService: fmt.Sprintf("forged-%d", i), Method: "GET", Path: "/"}
		if r := a.authorize(req, nil, secure.Sender{}); r == nil {
			t.Fatalf("%s allowed by a rule for web", req.SourceService)
		}
	}
	if n := testutil.CollectAndCount(m.AuthzDecisions); n > maxCallers+1 {
		t.Errorf("%d series of authz decisions, want at most %d callers and unknown", n, maxCallers)
	}
	if got := testutil.ToFloat64(m.AuthzDecisions.WithLabelValues(telemetry.Unknown, "orders", verdictDeny)); got != maxCallers {
		t.Errorf("unknown callers denied %v times, want %d", got, maxCallers)
	}
}
