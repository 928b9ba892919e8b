package discovery

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	_ "github.com/busmesh/busmesh/broker/nats"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestReplayAfterGoodbye runs over NATS: a neighbour without any
// certificate records an instance's signed hellos off the bus and, after
// the instance's goodbye, replays them (within the 30 s their signatures
// stay good). A watcher with an identity does not take the instance back;
// the same instance restarted (a new incarnation) is taken at once.
// Before, the goodbye left nothing to compare the replay's seq with, and
// the departed instance was called again for a lifetime per replay.
func TestReplayAfterGoodbye(t *testing.T) {
	ctx, open := sharedNATS(t)
	name := fmt.Sprintf("replay%d", time.Now().UnixNano())
	mesh := newTestCA(t, name)
	orders, _ := mesh.issue(t, "orders", "")
	web, _ := mesh.issue(t, "web", "")
	subject := broker.NewSubjects(name).Discovery("orders")

	spy := open()
	var mu sync.Mutex
	var captured [][]byte // a's signed hellos, in order
	if _, err := spy.Subscribe(ctx, subject, func(_ context.Context, d []byte) {
		var a busmeshv1.Announcement
		if proto.Unmarshal(d, &a) == nil && a.Kind == busmeshv1.Announcement_KIND_HELLO && a.Instance == "a" {
			mu.Lock()
			captured = append(captured, slices.Clone(d))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}

	// A lifetime of 3 s (the 1 s interval the hellos claim, three times):
	// a replay that got through would be seen long after it was applied.
	self := Self{Service: "orders", Instance: "a", Sidecar: "sc-a", Mesh: name}
	real := NewAnnouncer(open(), self, time.Second, nil, nil).WithIdentity(orders)
	reg := NewRegistryWith(Options{Interval: time.Second})
	reg.Route([]string{"orders"})
	w, err := WatchWith(ctx, open(), reg, WatchOptions{Mesh: name, Sidecar: "amb", Settle: 300 * time.Millisecond, Identity: web})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := real.Start(ctx, true); err != nil {
		t.Fatal(err)
	}
	has := func(instance string) bool { return slices.Contains(names(reg.Instances("orders")), instance) }
	healthy := func(instance string) bool { return slices.Contains(names(reg.Healthy("orders")), instance) }
	waitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return healthy("a") && len(captured) >= 2
	})
	if err := real.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return !has("a") })

	mu.Lock()
	replays := slices.Clone(captured)
	mu.Unlock()
	for _, d := range replays {
		if err := spy.Publish(ctx, subject, d); err != nil {
			t.Fatal(err)
		}
	}
	// A marker after the replays, from the same connection: once it is
	// heard, so were they.
	marker, err := NewSigner(orders).Marshal(&busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO,
		Service: "orders", Instance: "marker", Sidecar: "sc-m", Incarnation: newIncarnation(), Healthy: true,
		Seq: 1, IntervalMs: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Publish(ctx, subject, marker); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool { return healthy("marker") })
	if has("a") {
		t.Fatalf("after %d replayed hellos, a departed instance is back: %+v", len(replays), reg.Instances("orders"))
	}

	restarted := NewAnnouncer(open(), self, time.Second, nil, nil).WithIdentity(orders)
	if err := restarted.Start(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restarted.Stop(context.Background()) })
	waitFor(t, 5*time.Second, func() bool { return healthy("a") })
}
