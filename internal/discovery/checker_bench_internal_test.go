package discovery

import (
	"context"
	"testing"
	"time"

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
