package discovery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestAwaitFirst: a service the routes name that never had a healthy
// instance is awaited until one announcement interval after its first
// ping settled, the wait ending at the first healthy instance; a service
// nobody routes to, one found before, and one whose hearing is over are
// not awaited.
func TestAwaitFirst(t *testing.T) {
	var clock atomic.Int64
	clock.Store(int64(time.Hour))
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	r := NewRegistryWith(Options{Now: now, Interval: 2 * time.Second})
	r.Route([]string{"routed", "late", "unpinged"})
	r.Learn(t.Context(), "asked", 0)
	r.answer("routed")
	r.answer("late")
	ctx := t.Context()
	hello := func(service string) *busmeshv1.Announcement {
		return &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: service, Instance: service + "-1",
			Sidecar: service, Healthy: true, IntervalMs: 2000, Seq: 1}
	}

	if r.AwaitFirst(ctx, "asked", "") {
		t.Error("AwaitFirst waited for a service no route names")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		r.Apply(hello("routed"))
	}()
	start := time.Now()
	if !r.AwaitFirst(ctx, "routed", "") || len(r.Healthy("routed")) != 1 {
		t.Errorf("AwaitFirst(routed) did not wait for the first instance: %d healthy", len(r.Healthy("routed")))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("AwaitFirst(routed) took %v, want it to end at the first instance (50ms)", took)
	}
	r.Apply(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_GOODBYE, Service: "routed", Instance: "routed-1", Sidecar: "routed"})
	if r.AwaitFirst(ctx, "routed", "") {
		t.Error("AwaitFirst waited for a service that had a healthy instance before")
	}

	// waits reports whether AwaitFirst(service) waited, bounding the wait.
	waits := func(service string) bool {
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		return r.AwaitFirst(short, service, "")
	}
	if !waits("late") {
		t.Error("AwaitFirst(late) within its first interval did not wait")
	}
	clock.Add(int64(3 * time.Second))
	if waits("late") {
		t.Error("AwaitFirst waited for a service past its first interval")
	}
	// The hearing runs from the ping's settling, not from when the
	// service was routed: a ping settling late moves it.
	if !waits("unpinged") {
		t.Error("AwaitFirst did not wait for a service whose ping has not settled")
	}
	r.answer("unpinged")
	clock.Add(int64(1500 * time.Millisecond))
	if !waits("unpinged") {
		t.Error("AwaitFirst(unpinged) 1.5s after its ping settled did not wait")
	}
	clock.Add(int64(time.Second))
	if waits("unpinged") {
		t.Error("AwaitFirst(unpinged) 2.5s after its ping settled waited")
	}
}

// TestAwaitFirstVersion: within a routed service's first hearing, a
// version that never had a healthy instance is awaited though another
// version has one (a canary heard after the stable version), the wait
// ending when the version is first heard; once heard, or past the
// hearing, it is not awaited.
func TestAwaitFirstVersion(t *testing.T) {
	var clock atomic.Int64
	clock.Store(int64(time.Hour))
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	r := NewRegistryWith(Options{Now: now, Interval: 2 * time.Second})
	r.Route([]string{"orders"})
	r.answer("orders")
	ctx := t.Context()
	hello := func(version string) *busmeshv1.Announcement {
		return &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders", Instance: "orders-" + version,
			Sidecar: "orders-" + version, Version: version, Healthy: true, IntervalMs: 2000, Seq: 1}
	}
	r.Apply(hello("v1"))
	if r.AwaitFirst(ctx, "orders", "v1") || r.AwaitFirst(ctx, "orders", "") {
		t.Error("AwaitFirst waited for a version (or any) already heard")
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		r.Apply(hello("v2"))
	}()
	start := time.Now()
	if !r.AwaitFirst(ctx, "orders", "v2") {
		t.Error("AwaitFirst(v2) did not wait for a version not heard yet while v1 was")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("AwaitFirst(v2) took %v, want it to end when v2 is heard (50ms)", took)
	}
	healthy := r.Healthy("orders")
	if len(healthy) != 2 || healthy[1].Version != "v2" {
		t.Errorf("after the wait, healthy = %+v, want v1 and v2", healthy)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if !r.AwaitFirst(short, "orders", "v3") {
		t.Error("AwaitFirst(v3) within the first hearing did not wait")
	}
	clock.Add(int64(3 * time.Second))
	if r.AwaitFirst(ctx, "orders", "v3") {
		t.Error("AwaitFirst(v3) past the first hearing waited")
	}
}
