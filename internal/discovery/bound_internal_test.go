package discovery

import (
	"slices"
	"testing"
	"time"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestBoundForgetsWhatNobodyServes: at the bound of services asked for, a
// new service takes the place of one whose ask settled with no instance at
// least forgetAfter ago; a service with an instance, one whose ask is
// still out and one that settled just now keep theirs.
// Before, names that are no service filled the bound for good and a real
// service asked for after them could not be learnt.
func TestBoundForgetsWhatNobodyServes(t *testing.T) {
	now := time.Unix(1e9, 0)
	r := NewRegistryWith(Options{MaxServices: 2, Now: func() time.Time { return now }})
	r.Route([]string{"routed"}) // not counted against the bound
	if r.ensure("served") == nil || r.ensure("made-up") == nil {
		t.Fatal("the first two services were not watched")
	}
	r.Apply(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "served", Instance: "i-1", Sidecar: "sc-1", Healthy: true})
	// made-up's ask is still out: nothing may be forgotten yet.
	if r.ensure("real") != nil {
		t.Fatalf("watched %v: a service took the place of one whose ask is out", r.Watched())
	}
	r.answer("made-up") // settled, nobody answered
	now = now.Add(forgetAfter - time.Second)
	if r.ensure("real") != nil {
		t.Fatalf("watched %v: made-up was forgotten before forgetAfter", r.Watched())
	}
	now = now.Add(time.Second)
	if r.ensure("real") == nil {
		t.Fatalf("watched %v: a new service was refused though made-up is served by nobody", r.Watched())
	}
	if got, want := r.Watched(), []string{"real", "routed", "served"}; !slices.Equal(got, want) {
		t.Errorf("Watched = %v, want %v", got, want)
	}
	// served has an instance, real's ask is out: the next is refused.
	if r.ensure("another") != nil {
		t.Errorf("watched %v: a served service or one asked for just now was forgotten", r.Watched())
	}
}
