package discovery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// BenchmarkWatcherHeartbeat is what one heartbeat of an unchanged
// instance costs the watcher that hears it (decode, credentials,
// registry), over 100 instances: unsigned (no identity, as before signed
// discovery), signed and checked by signature every time (no chain
// token), and signed with chain tokens (a signature once per chain).
// Run it with a fixed count, e.g. -benchtime 20000x: the messages are
// made before the timer starts.
func BenchmarkWatcherHeartbeat(b *testing.B) {
	const instances = 100
	mesh := newTestCA(b, "bench")
	web, _ := mesh.issue(b, "web", "")
	orders, _ := mesh.issue(b, "orders", "")
	for _, mode := range []string{"unsigned", "signed-every", "signed-chain"} {
		b.Run(mode, func(b *testing.B) {
			reg := NewRegistryWith(Options{Interval: time.Hour})
			reg.Route([]string{"orders"})
			w := &Watcher{reg: reg, logger: reg.logger}
			if mode != "unsigned" {
				w.checker = newChecker(web, reg.rejected, nil)
			}
			signers := make([]*Signer, instances)
			for i := range signers {
				signers[i] = NewSigner(orders)
			}
			msgs := make([][]byte, b.N)
			for i := range msgs {
				a := &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders",
					Instance: "i" + string(rune('a'+i%instances/26)) + string(rune('a'+i%instances%26)),
					Sidecar:  "sc", Incarnation: "inc", Healthy: true, Seq: uint64(i/instances + 1), IntervalMs: 2000}
				var err error
				switch mode {
				case "unsigned":
					msgs[i], err = (*Signer)(nil).marshal(a, false)
				case "signed-every":
					msgs[i], err = signers[i%instances].Marshal(a)
					if err == nil {
						a.Chain = nil
						msgs[i] = resignB(b, signers[i%instances], a)
					}
				default:
					msgs[i], err = signers[i%instances].Marshal(a)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				w.handle(ctx, msgs[i])
			}
			b.StopTimer()
			if got := len(reg.Instances("orders")); got != min(instances, b.N) {
				b.Fatalf("registry has %d instances, want %d", got, min(instances, b.N))
			}
		})
	}
}

// BenchmarkAnnouncerSign is what sending one announcement costs to
// encode: unsigned, or signed with its chain token.
func BenchmarkAnnouncerSign(b *testing.B) {
	orders, _ := newTestCA(b, "bench").issue(b, "orders", "")
	for _, s := range []*Signer{nil, NewSigner(orders)} {
		name := "unsigned"
		if s != nil {
			name = "signed"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := range b.N {
				a := &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders", Instance: "a",
					Sidecar: "sc", Incarnation: "inc", Healthy: true, Seq: uint64(i + 1), IntervalMs: 2000}
				if _, err := s.marshal(a, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWatcherStorm is the ambassador's cost of a neighbour's
// announcement storm about a routed service (as test/hostile's storm
// sends it): forged hellos about a live instance and hellos of instances
// nobody runs, alternating.
func BenchmarkWatcherStorm(b *testing.B) {
	reg := NewRegistryWith(Options{Interval: 2 * time.Second})
	reg.Route([]string{"big"})
	w := &Watcher{reg: reg, logger: reg.logger}
	real := &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "big", Instance: "real",
		Sidecar: "sc", Incarnation: "inc", Healthy: true, Seq: 1, IntervalMs: 2000}
	reg.update(real, true)
	msgs := make([][]byte, 30_000)
	for n := range msgs {
		a := &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "big", Instance: "real",
			Sidecar: "storm", Seq: uint64(n) << 32, IntervalMs: 60_000}
		if n%2 == 1 {
			a = &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "big",
				Instance: fmt.Sprintf("storm%d", n), Sidecar: "storm", Healthy: n%4 == 1, Seq: uint64(n)}
		}
		msgs[n], _ = proto.Marshal(a)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w.handle(ctx, msgs[i%len(msgs)])
	}
}
