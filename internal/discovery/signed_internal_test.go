package discovery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/broker"
	_ "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// TestSignedDiscovery runs over NATS: a watcher with an identity learns an
// instance whose announcer signs; forgeries that copy the instance's
// sidecar id and incarnation (which a careful forger reads off the bus)
// are rejected before the registry and counted, unsigned, signed by
// another service or by another CA; an announcer without identity is not
// believed. A watcher without identity still takes signed announcements.
func TestSignedDiscovery(t *testing.T) {
	ctx, open := sharedNATS(t)
	name := fmt.Sprintf("signed%d", time.Now().UnixNano())
	mesh := newTestCA(t, name)
	orders, _ := mesh.issue(t, "orders", "")
	billing, _ := mesh.issue(t, "billing", "")
	web, _ := mesh.issue(t, "web", "")
	foreign, _ := newTestCA(t, name).issue(t, "orders", "")

	real := NewAnnouncer(open(), Self{Service: "orders", Instance: "a", Sidecar: "sc-a", Mesh: name},
		100*time.Millisecond, nil, nil).WithIdentity(orders)
	if err := real.Start(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { real.Stop(context.Background()) })
	unsigned := NewAnnouncer(open(), Self{Service: "orders", Instance: "b", Sidecar: "sc-b", Mesh: name},
		100*time.Millisecond, nil, nil)
	if err := unsigned.Start(ctx, true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unsigned.Stop(context.Background()) })

	m := telemetry.NewMetrics()
	reg := NewRegistryWith(Options{Metrics: m, Interval: 100 * time.Millisecond})
	reg.Route([]string{"orders"})
	w, err := WatchWith(ctx, open(), reg, WatchOptions{Mesh: name, Sidecar: "amb", Settle: time.Second, Identity: web})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	plain := NewRegistry(nil)
	plain.Route([]string{"orders"})
	pw, err := WatchWith(ctx, open(), plain, WatchOptions{Mesh: name, Sidecar: "plain", Settle: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()

	only := func(r *Registry, want ...string) bool {
		got := names(r.Healthy("orders"))
		return fmt.Sprint(got) == fmt.Sprint(want)
	}
	waitFor(t, 5*time.Second, func() bool { return only(reg, "a") })
	waitFor(t, 5*time.Second, func() bool { return only(plain, "a", "b") })

	// Forgeries about a, under its own sidecar id and incarnation.
	f := open()
	subject := broker.NewSubjects(name).Discovery("orders")
	forge := func(s *Signer, kind busmeshv1.Announcement_Kind) {
		a := &busmeshv1.Announcement{Kind: kind, Service: "orders", Instance: "a", Sidecar: "sc-a",
			Incarnation: real.Incarnation(), Healthy: false, Seq: 1 << 62, IntervalMs: 100}
		var data []byte
		var err error
		if s == nil {
			data, err = proto.Marshal(a)
		} else {
			data, err = s.Marshal(a)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]float64{}
	for range 3 {
		for _, kind := range []busmeshv1.Announcement_Kind{busmeshv1.Announcement_KIND_GOODBYE, busmeshv1.Announcement_KIND_HELLO} {
			forge(nil, kind)
			forge(NewSigner(billing), kind)
			forge(NewSigner(foreign), kind)
			want["wrong-service"]++
			want["unknown-ca"]++
		}
	}
	rejected := func(reason string) float64 {
		return testutil.ToFloat64(m.EnvelopesRejected.WithLabelValues("discovery", reason))
	}
	waitFor(t, 5*time.Second, func() bool {
		return rejected("wrong-service") >= want["wrong-service"] && rejected("unknown-ca") >= want["unknown-ca"]
	})
	time.Sleep(300 * time.Millisecond) // three intervals of the real heartbeats
	if !only(reg, "a") {
		t.Errorf("after the forgeries, Healthy = %v, want [a]", names(reg.Healthy("orders")))
	}
	if got := rejected("unauthenticated"); got < 6 {
		t.Errorf("rejected{unauthenticated} = %v, want at least 6 forgeries (and b's hellos)", got)
	}
	for reason, n := range want {
		if got := rejected(reason); got != n {
			t.Errorf("rejected{%s} = %v, want %v", reason, got, n)
		}
	}
	if got := rejected("foreign"); got != 0 {
		t.Errorf("rejected{foreign} = %v: a forgery reached the registry", got)
	}
}

// waitFor waits up to d for cond.
func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", d)
		}
	}
}

// names lists the instances' names.
func names(insts []Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.Name
	}
	return out
}
