package discovery

import (
	"fmt"
	"testing"
	"time"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// announce is an announcement of instance by sidecar sc under incarnation
// inc, its 1 s interval claimed.
func announce(kind busmeshv1.Announcement_Kind, instance, sc, inc string, seq uint64) *busmeshv1.Announcement {
	return &busmeshv1.Announcement{Kind: kind, Service: "orders", Instance: instance, Sidecar: sc, Incarnation: inc,
		Healthy: true, Seq: seq, IntervalMs: 1000}
}

// TestTombstoneRefusesReplays: after an instance's goodbye or expiry, its
// own earlier hellos (a replay: the checker takes a signed one for 30 s)
// do not bring it back, for tombstoneKeep; a restart under a new
// incarnation, or the same incarnation back with a newer seq, is taken at
// once.
func TestTombstoneRefusesReplays(t *testing.T) {
	const (
		hi  = busmeshv1.Announcement_KIND_HELLO
		bye = busmeshv1.Announcement_KIND_GOODBYE
	)
	now := time.Unix(1e9, 0)
	r := NewRegistryWith(Options{Interval: time.Second, Now: func() time.Time { return now }})
	known := func(instance string) bool {
		return len(r.Instances("orders")) == 1 && r.Instances("orders")[0].Name == instance
	}

	r.Apply(announce(hi, "a", "sc-a", "inc1", 1))
	r.Apply(announce(hi, "a", "sc-a", "inc1", 2))
	r.Apply(announce(bye, "a", "sc-a", "inc1", 3))
	for _, seq := range []uint64{0, 1, 2, 3} {
		now = now.Add(time.Second)
		if r.Apply(announce(hi, "a", "sc-a", "inc1", seq)) || r.Has("orders") {
			t.Fatalf("a hello of seq %d after the goodbye of seq 3 brought a back", seq)
		}
	}
	if !r.Apply(announce(hi, "a", "sc-a", "inc2", 1)) || !known("a") {
		t.Fatal("a restart under a new incarnation was refused")
	}

	// Expiry: the last seq heard is the tombstone's.
	now = now.Add(3*time.Second + 200*time.Millisecond)
	if gone := r.Expire(); len(gone) != 1 {
		t.Fatalf("Expire = %v, want a", gone)
	}
	if r.Apply(announce(hi, "a", "sc-a", "inc2", 1)) || r.Has("orders") {
		t.Fatal("a replay of the last hello before the expiry brought a back")
	}
	if !r.Apply(announce(hi, "a", "sc-a", "inc2", 2)) || !known("a") {
		t.Fatal("the same incarnation, back with a newer seq, was refused")
	}

	// Kept for tombstoneKeep: later the checker refuses an old signed
	// hello by its timestamp.
	r.Apply(announce(hi, "b", "sc-b", "x", 5))
	r.Apply(announce(bye, "b", "sc-b", "x", 6))
	now = now.Add(tombstoneKeep - time.Millisecond)
	if r.Apply(announce(hi, "b", "sc-b", "x", 5)) {
		t.Fatal("a replay just within tombstoneKeep was taken")
	}
	now = now.Add(time.Millisecond)
	r.Expire()
	if !r.Apply(announce(hi, "b", "sc-b", "x", 5)) {
		t.Fatal("the tombstone outlived tombstoneKeep")
	}
	for _, k := range []tombKey{{"orders", "a", owner{"sc-a", "inc1"}}, {"orders", "b", owner{"sc-b", "x"}}} {
		if _, ok := r.tombs.kept[k]; ok {
			t.Errorf("the tombstone of %v kept past tombstoneKeep", k)
		}
	}

	// An adapter without incarnation: a restart cannot be told from a
	// replay, so nothing is kept.
	r.Apply(announce(hi, "c", "sc-c", "", 7))
	r.Apply(announce(bye, "c", "sc-c", "", 8))
	if !r.Apply(announce(hi, "c", "sc-c", "", 1)) {
		t.Error("an adapter without incarnation, restarted, was refused")
	}
}

// TestTombstonesBounded: a flood of departures, of many instances or of
// one owner again and again, keeps at most the bound (the instances a
// service may have), the newest.
func TestTombstonesBounded(t *testing.T) {
	const max = 4
	now := time.Unix(1e9, 0)
	r := NewRegistryWith(Options{Interval: time.Second, MaxInstances: max, Now: func() time.Time { return now }})
	hi, bye := busmeshv1.Announcement_KIND_HELLO, busmeshv1.Announcement_KIND_GOODBYE
	for i := range 100 {
		name := fmt.Sprintf("i%d", i)
		r.Apply(announce(hi, name, name, "x", 1))
		r.Apply(announce(bye, name, name, "x", 2))
	}
	for i := range 200 {
		r.Apply(announce(hi, "one", "sc", "x", uint64(2*i+1)))
		r.Apply(announce(bye, "one", "sc", "x", uint64(2*i+2)))
	}
	if k, o := len(r.tombs.kept), len(r.tombs.order); k > max || o > max {
		t.Fatalf("%d tombstones kept, %d in order, want at most %d", k, o, max)
	}
	if r.Apply(announce(hi, "one", "sc", "x", 400)) {
		t.Error("the newest tombstone was evicted")
	}
	if !r.Apply(announce(hi, "i0", "i0", "x", 1)) {
		t.Error("the oldest tombstone was kept beyond the bound")
	}
}
