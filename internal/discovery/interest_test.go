package discovery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestWatcherInterest runs over NATS: a watcher knows the services its
// routes name, from answers to its own inbox, learns a service a call
// asks for, and follows route changes; announcements of other services
// never reach it.
func TestWatcherInterest(t *testing.T) {
	addr := envOr("BUSMESH_TEST_NATS", "127.0.0.1:4222")
	brokertest.Require(t, "nats", addr, "nats-server -p 4222")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	open := func() broker.Broker {
		b, err := broker.Open(ctx, "nats://"+addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	mesh := fmt.Sprintf("interest%d", time.Now().UnixNano())
	adapters := open()
	for _, svc := range []string{"routed", "asked", "other"} {
		// A long interval: what the watcher knows comes from its asking.
		a := discovery.NewAnnouncer(adapters, discovery.Self{Service: svc, Instance: svc + "-1", Sidecar: svc, Mesh: mesh},
			time.Minute, nil, nil)
		if err := a.Start(ctx, true); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Stop(context.Background()) })
	}
	time.Sleep(50 * time.Millisecond) // the start hellos are gone by
	m := telemetry.NewMetrics()
	reg := discovery.NewRegistryWith(discovery.Options{Metrics: m})
	reg.Route([]string{"routed"})
	w, err := discovery.WatchWith(ctx, open(), reg, discovery.WatchOptions{Mesh: mesh, Sidecar: "amb", Settle: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got := names(reg.Healthy("routed")); !cmp.Equal(got, []string{"routed-1"}) {
		t.Errorf("after Watch, Healthy(routed) = %v, want [routed-1] from the ping's answer", got)
	}
	if got := reg.Watched(); !cmp.Equal(got, []string{"routed"}) {
		t.Errorf("Watched = %v, want only the routed service", got)
	}
	start := time.Now()
	if !reg.Learn(ctx, "asked", 5*time.Second) {
		t.Error("Learn(asked) did not wait for the first answer")
	}
	if got := names(reg.Healthy("asked")); !cmp.Equal(got, []string{"asked-1"}) {
		t.Errorf("after Learn, Healthy(asked) = %v after %v, want [asked-1]", got, time.Since(start))
	}
	if reg.Learn(ctx, "asked", 5*time.Second) {
		t.Error("a second Learn(asked) waited")
	}
	reg.Route([]string{"other"})
	eventually(t, 5*time.Second, func() bool { return len(reg.Healthy("other")) == 1 })
	if got := reg.Watched(); !cmp.Equal(got, []string{"asked", "other"}) {
		t.Errorf("after the routes changed, Watched = %v, want [asked other]", got)
	}
	if got := rejected(m, "unwanted"); got != 0 {
		t.Errorf("%v announcements of services not watched reached the watcher", got)
	}

	// Dropped and routed again before the watcher's next pass (a reload
	// and its undo): the new entry is asked, though its subscription was
	// kept, so the first call learns its instances at once.
	reg.Route(nil)
	reg.Route([]string{"other"})
	start = time.Now()
	reg.Learn(ctx, "other", 5*time.Second)
	if got := names(reg.Healthy("other")); !cmp.Equal(got, []string{"other-1"}) || time.Since(start) > 2*time.Second {
		t.Errorf("a service routed again: Healthy = %v after %v, want [other-1] at once", got, time.Since(start))
	}
}
