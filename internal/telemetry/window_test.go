package telemetry

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
)

func TestWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	w := NewWindow(10 * time.Second)
	w.now = func() time.Time { return now }
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	k := EdgeKey{Side: SideAmbassador, Caller: "web", Service: "orders"}
	e := w.Edge(k, func() prometheus.Gauge { return gauge })
	if w.Edge(k, nil) != e {
		t.Fatal("Edge returned a second window for the same edge")
	}
	for range 98 {
		e.Start()
		e.Done(false, 2*time.Millisecond)
	}
	for range 2 {
		e.Start()
		e.Done(true, 400*time.Millisecond)
	}
	e.Start() // one still in flight
	if got := testutil.ToFloat64(gauge); got != 1 {
		t.Errorf("in-flight gauge = %v, want 1", got)
	}
	now = now.Add(5 * time.Second)
	other := w.Edge(EdgeKey{Side: SideAmbassador, Caller: "admin", Service: "orders"}, nil)
	other.Start()
	other.Done(false, 2*time.Millisecond)
	s, services := w.Snapshot()
	if len(services) != 1 || services[0].Requests != 101 || services[0].Caller != "" || services[0].Inflight != 1 {
		t.Errorf("Snapshot() services = %+v, want orders with 101 requests over both callers", services)
	}
	s = s[1:] // the admin edge sorts first
	if len(s) != 1 {
		t.Fatalf("Snapshot() has %d edges, want 1", len(s))
	}
	st := s[0]
	if st.EdgeKey != k || st.Requests != 100 || st.Failures != 2 || st.Inflight != 1 || st.Rate != 10 {
		t.Errorf("Snapshot() = %+v, want 100 requests, 2 failures, 1 in flight, 10/s", st)
	}
	if got := st.SuccessRate(); got != 0.98 {
		t.Errorf("SuccessRate() = %v, want 0.98", got)
	}
	if st.P50 < 1700*time.Microsecond || st.P50 > 2400*time.Microsecond {
		t.Errorf("P50 = %v, want about 2ms", st.P50)
	}
	if st.P99 < 340*time.Millisecond || st.P99 > 480*time.Millisecond {
		t.Errorf("P99 = %v, want about 400ms", st.P99)
	}
	// Ten seconds on, the calls have left the window; the one in flight
	// has not.
	now = now.Add(10 * time.Second)
	edges, _ := w.Snapshot()
	st = edges[1]
	if st.Requests != 0 || st.P50 != 0 || st.Inflight != 1 || st.SuccessRate() != 1 {
		t.Errorf("Snapshot() after the window = %+v, want no requests, 1 in flight", st)
	}
}

func TestBounded(t *testing.T) {
	b := Bounded{Max: 2}
	for _, c := range []struct{ in, want string }{
		{"a", "a"}, {"b", "b"}, {"a", "a"}, {"c", Unknown}, {"", Unknown}, {"b", "b"},
	} {
		if got := b.Admit(c.in); got != c.want {
			t.Errorf("Admit(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if b.Known("c") || !b.Known("a") {
		t.Error("Known: want a known, c not")
	}
}

func TestClass(t *testing.T) {
	tests := []struct {
		status int
		grpc   bool
		code   int
		want   string
	}{
		{200, false, 0, "2xx"}, {404, false, 0, "4xx"}, {499, false, 0, "4xx"}, {504, false, 0, "5xx"}, {0, false, 0, "5xx"},
		{200, true, 0, "2xx"}, {200, true, 4, "5xx"}, {200, true, 1, "4xx"}, {200, true, 5, "4xx"}, {200, true, 14, "5xx"}, {200, true, 99, "5xx"},
	}
	for _, tt := range tests {
		if got := Class(tt.status, tt.grpc, codeOf(tt.code)); got != tt.want {
			t.Errorf("Class(%d, %v, %d) = %q, want %q", tt.status, tt.grpc, tt.code, got, tt.want)
		}
	}
	if got := GRPCCode(4); got != "DeadlineExceeded" {
		t.Errorf("GRPCCode(4) = %q, want DeadlineExceeded", got)
	}
	if got := GRPCCode(99); got != Unknown {
		t.Errorf("GRPCCode(99) = %q, want %q: a made-up code is no label value", got, Unknown)
	}
}

func codeOf(c int) codes.Code { return codes.Code(c) }
