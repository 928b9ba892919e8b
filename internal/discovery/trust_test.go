package discovery_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// from is an announcement by a given sidecar and incarnation.
func from(kind busmeshv1.Announcement_Kind, instance, sidecar, incarnation string, healthy bool, seq uint64, intervalMs uint32) *busmeshv1.Announcement {
	return &busmeshv1.Announcement{Kind: kind, Service: "orders", Instance: instance, Sidecar: sidecar,
		Incarnation: incarnation, Healthy: healthy, Seq: seq, IntervalMs: intervalMs}
}

const (
	hi  = busmeshv1.Announcement_KIND_HELLO
	bye = busmeshv1.Announcement_KIND_GOODBYE
)

func rejected(m *telemetry.Metrics, reason string) float64 {
	return testutil.ToFloat64(m.EnvelopesRejected.WithLabelValues("discovery", reason))
}

// TestRegistryTrustsOnlyTheOwner forges what issue 19 saw make every call
// fail: goodbye, unhealthy, a very high sequence and a long interval about
// a live instance, from another sidecar. None of it changes the entry;
// each is counted.
func TestRegistryTrustsOnlyTheOwner(t *testing.T) {
	c := &clock{}
	m := telemetry.NewMetrics()
	r := discovery.NewRegistryWith(discovery.Options{Now: c.now, Interval: time.Second, Metrics: m})
	r.Apply(from(hi, "a", "sc-a", "inc1", true, 1, 1000))
	forgeries := []*busmeshv1.Announcement{
		from(bye, "a", "evil", "x", false, 0, 0),
		from(hi, "a", "evil", "x", false, 1<<62, 60_000),
		from(bye, "a", "sc-a", "other-incarnation", false, 1<<62, 0),
		from(hi, "a", "", "", false, 1<<62, 60_000),
	}
	for i, f := range forgeries {
		if r.Apply(f) {
			t.Errorf("forgery %d changed the healthy set", i)
		}
		if got := names(r.Healthy("orders")); !cmp.Equal(got, []string{"a"}) {
			t.Fatalf("after forgery %d, Healthy = %v, want [a]", i, got)
		}
	}
	if got := rejected(m, "foreign"); got != float64(len(forgeries)) {
		t.Errorf("foreign rejections = %v, want %d", got, len(forgeries))
	}
	// The owner's own word still counts, with its own sequence.
	if !r.Apply(from(hi, "a", "sc-a", "inc1", false, 2, 1000)) {
		t.Error("the owner's unhealthy hello did not change the healthy set")
	}
	if !r.Apply(from(bye, "a", "sc-a", "inc1", false, 3, 1000)) {
		t.Error("the owner's goodbye did not change the set")
	}
}

// TestRegistryCapsLifetime: an interval of a minute claimed by the owner
// itself earns at most 3 × 2 × the registry's interval.
func TestRegistryCapsLifetime(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistryWith(discovery.Options{Now: c.now, Interval: time.Second})
	r.Apply(from(hi, "a", "sc-a", "i", true, 1, 60_000))
	if got := r.Instances("orders")[0].TTL; got != 6*time.Second {
		t.Errorf("TTL = %v, want 6s (capped)", got)
	}
	c.advance(6*time.Second + 200*time.Millisecond)
	if gone := names(r.Expire()); !cmp.Equal(gone, []string{"a"}) {
		t.Errorf("Expire after 6.2s = %v, want [a]", gone)
	}
}

// TestRegistryConflict: a second live sidecar with the same instance id is
// reported, ignored while the first lives, and takes over when the first
// leaves, so the instance is never missing.
func TestRegistryConflict(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistryWith(discovery.Options{Now: c.now, Interval: time.Second})
	r.Apply(from(hi, "a", "sc-1", "i1", true, 1, 1000))
	r.Apply(from(hi, "a", "sc-2", "i2", true, 1, 1000))
	if got := r.Instances("orders")[0].Conflict; got != "" {
		t.Errorf("conflict after the rival's first hello = %q, want none until both are heard alive", got)
	}
	c.advance(500 * time.Millisecond)
	r.Apply(from(hi, "a", "sc-1", "i1", true, 2, 1000))
	in := r.Instances("orders")[0]
	if in.Conflict != "sc-2/i2" || in.Sidecar != "sc-1" {
		t.Fatalf("after both spoke: sidecar %q conflict %q, want sc-1 and sc-2/i2", in.Sidecar, in.Conflict)
	}
	r.Apply(from(bye, "a", "sc-1", "i1", false, 3, 1000))
	in = r.Instances("orders")[0]
	if in.Sidecar != "sc-2" || in.Conflict != "" || !in.Healthy {
		t.Fatalf("after the first left: %+v, want sc-2, healthy, no conflict", in)
	}
	if got := names(r.Healthy("orders")); !cmp.Equal(got, []string{"a"}) {
		t.Errorf("Healthy = %v, want [a] throughout", got)
	}
}

// TestRegistryRestart: a sidecar that crashed and came back under a new
// incarnation is no conflict; it takes the entry over when the old one
// expires.
func TestRegistryRestart(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistryWith(discovery.Options{Now: c.now, Interval: time.Second})
	r.Apply(from(hi, "a", "sc-1", "old", true, 1, 1000))
	for range 4 {
		c.advance(time.Second)
		r.Apply(from(hi, "a", "sc-1", "new", true, 1, 1000))
		r.Expire()
	}
	in := r.Instances("orders")
	if len(in) != 1 || in[0].Conflict != "" || !in[0].Healthy {
		t.Fatalf("Instances = %+v, want one healthy, no conflict", in)
	}
	if !r.Apply(from(bye, "a", "sc-1", "new", false, 2, 1000)) {
		t.Error("the new incarnation does not own the entry")
	}
}

// TestRegistryBounds: instances per service and services watched are
// bounded; the excess is counted.
func TestRegistryBounds(t *testing.T) {
	m := telemetry.NewMetrics()
	r := discovery.NewRegistryWith(discovery.Options{MaxInstances: 3, MaxServices: 2, Metrics: m})
	for i := range 5 {
		r.Apply(from(hi, fmt.Sprintf("g%d", i), "ghost", "x", true, 1, 1000))
	}
	if got := len(r.Instances("orders")); got != 3 {
		t.Errorf("instances kept = %d, want 3", got)
	}
	if got := rejected(m, "instance-limit"); got != 2 {
		t.Errorf("instance-limit rejections = %v, want 2", got)
	}
	r.Route([]string{"routed"}) // routed services do not count against the bound
	r.Apply(&busmeshv1.Announcement{Kind: hi, Service: "second", Instance: "x", Sidecar: "x"})
	r.Apply(&busmeshv1.Announcement{Kind: hi, Service: "third", Instance: "x", Sidecar: "x"})
	if got := r.Watched(); !cmp.Equal(got, []string{"orders", "routed", "second"}) {
		t.Errorf("Watched = %v", got)
	}
	if got := rejected(m, "service-limit"); got != 1 {
		t.Errorf("service-limit rejections = %v, want 1", got)
	}
	r.Apply(&busmeshv1.Announcement{Kind: hi, Service: "bad.name", Instance: "x"})
	if got := rejected(m, "malformed"); got != 1 {
		t.Errorf("malformed rejections = %v, want 1", got)
	}
}

// TestRegistryRoute: the registry follows the routing table; services
// dropped from it are forgotten.
func TestRegistryRoute(t *testing.T) {
	r := discovery.NewRegistry(nil)
	r.Route([]string{"a", "b"})
	r.Apply(&busmeshv1.Announcement{Kind: hi, Service: "b", Instance: "x", Sidecar: "x", Healthy: true})
	r.Route([]string{"a", "c"})
	if got := r.Watched(); !cmp.Equal(got, []string{"a", "c"}) {
		t.Errorf("Watched = %v, want [a c]", got)
	}
	if got := r.Healthy("b"); len(got) != 0 {
		t.Errorf("Healthy(b) = %v after b left the routes", names(got))
	}
}

// TestRegistrySuspect: an instance the broker found nobody behind leaves
// the snapshot for a second, then comes back; the last one never leaves.
func TestRegistrySuspect(t *testing.T) {
	c := &clock{}
	r := discovery.NewRegistryWith(discovery.Options{Now: c.now})
	r.Apply(from(hi, "a", "a", "", true, 1, 1000))
	r.Apply(from(hi, "b", "b", "", true, 1, 1000))
	r.Suspect("orders", "a")
	if got := names(r.Healthy("orders")); !cmp.Equal(got, []string{"b"}) {
		t.Errorf("after Suspect(a): %v, want [b]", got)
	}
	r.Suspect("orders", "b")
	if got := names(r.Healthy("orders")); !cmp.Equal(got, []string{"b"}) {
		t.Errorf("after Suspect(b), the last: %v, want [b]", got)
	}
	c.advance(1100 * time.Millisecond)
	r.Expire()
	if got := names(r.Healthy("orders")); !cmp.Equal(got, []string{"a", "b"}) {
		t.Errorf("a second later: %v, want [a b]", got)
	}
}

// BenchmarkRegistryHeartbeat measures one heartbeat (an owner's unchanged
// hello) into a service of n instances: the cost must not grow with n.
func BenchmarkRegistryHeartbeat(b *testing.B) {
	for _, n := range []int{10, 1000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			r := discovery.NewRegistryWith(discovery.Options{MaxInstances: n})
			msgs := make([]*busmeshv1.Announcement, n)
			for i := range msgs {
				msgs[i] = from(hi, fmt.Sprintf("i%05d", i), fmt.Sprintf("s%05d", i), "x", true, 1, 2000)
				r.Apply(msgs[i])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				m := msgs[i%n]
				m.Seq++
				r.Apply(m)
			}
		})
	}
}

// BenchmarkRegistryHealthy is the request path's read.
func BenchmarkRegistryHealthy(b *testing.B) {
	r := discovery.NewRegistry(nil)
	r.Apply(from(hi, "a", "a", "", true, 1, 1000))
	b.ReportAllocs()
	for b.Loop() {
		if len(r.Healthy("orders")) != 1 {
			b.Fatal("lost the instance")
		}
	}
}
