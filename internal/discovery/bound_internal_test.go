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
	r.answer("served")
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
	// served restarts long after it was asked for: between its goodbye and
	// its new instance's hello it is not one nobody serves.
	r.answer("real")
	now = now.Add(forgetAfter)
	r.Apply(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_GOODBYE, Service: "served", Instance: "i-1", Sidecar: "sc-1"})
	now = now.Add(time.Second)
	if r.ensure("another") == nil {
		t.Fatalf("watched %v: real, asked for a minute ago and served by nobody, kept its place", r.Watched())
	}
	if r.ensure("extra") != nil {
		t.Errorf("watched %v: a second new service took the place of served, restarting a second ago", r.Watched())
	}
	if got, want := r.Watched(), []string{"another", "routed", "served"}; !slices.Equal(got, want) {
		t.Errorf("Watched = %v, want %v: a service restarting a second ago was forgotten", got, want)
	}
	r.answer("another")
	now = now.Add(forgetAfter)
	if r.ensure("third") == nil || r.ensure("fourth") == nil {
		t.Fatalf("watched %v: another and served, gone for a minute, kept their places", r.Watched())
	}
	if got, want := r.Watched(), []string{"fourth", "routed", "third"}; !slices.Equal(got, want) {
		t.Errorf("Watched = %v, want %v", got, want)
	}
}
