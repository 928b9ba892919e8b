package discovery

import (
	"testing"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestRegistryVerifies: a neighbour that spoke first about an instance
// (unhealthy) owns the entry only until the instance's adapter answers a
// ping; a rival's hello makes the registry ask; an owner that answered
// keeps the entry against later claims.
func TestRegistryVerifies(t *testing.T) {
	r := NewRegistry(nil)
	r.Route([]string{"orders"})
	hello := func(sidecar string, healthy bool) *busmeshv1.Announcement {
		return &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders", Instance: "a",
			Sidecar: sidecar, Incarnation: sidecar, Healthy: healthy, IntervalMs: 1000}
	}
	r.update(hello("forger", false), false)
	r.update(hello("real", true), false)
	select {
	case v := <-r.verify:
		if v != (verification{"orders", "a"}) {
			t.Errorf("asked to verify %v, want orders/a", v)
		}
	default:
		t.Fatal("a rival's hello about an unverified entry asked nothing")
	}
	r.update(hello("real", true), true) // its answer to the ping
	r.flush()
	r.mu.Lock()
	r.flushLocked()
	r.mu.Unlock()
	in := r.Instances("orders")
	if len(in) != 1 || in[0].Sidecar != "real" || !in[0].Healthy {
		t.Fatalf("after the answer: %+v, want owned by real, healthy", in)
	}
	if got := len(r.Healthy("orders")); got != 1 {
		t.Errorf("Healthy has %d instances, want 1", got)
	}
	r.update(hello("forger", false), true) // even a forger's answer
	if in := r.Instances("orders"); in[0].Sidecar != "real" || !in[0].Healthy {
		t.Errorf("a verified owner lost the entry: %+v", in[0])
	}
}
