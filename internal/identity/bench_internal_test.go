package identity

import (
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReplayGuardShards compares one lock with the sharded guard under
// parallel checks; run it with -cpu to see contention grow.
func BenchmarkReplayGuardShards(b *testing.B) {
	for _, shards := range []int{1, replayShards} {
		b.Run(map[int]string{1: "1lock", replayShards: "16shards"}[shards], func(b *testing.B) {
			g := newReplayGuard(ReplayConfig{MaxEntries: 1 << 24}, shards)
			var id atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := g.Check(KeyID{1}, id.Add(1), time.Now().UnixNano()); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkDerivePairKey is the first contact between two identities:
// X25519 and HKDF. It happens once per pair, then the key is cached.
func BenchmarkDerivePairKey(b *testing.B) {
	ca, err := NewCA("prod", time.Hour, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	id := func(service string) *Identity {
		certPEM, keyPEM, err := ca.Issue(service, time.Minute, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		i, err := New(certPEM, keyPEM, encodeCert(ca.cert.Raw), nil)
		if err != nil {
			b.Fatal(err)
		}
		return i
	}
	web, orders := id("web"), id("orders")
	p, err := web.VerifyPeer(orders.cert.Raw)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := derivePairKey(web, p, web.keyID, p.keyID); err != nil {
			b.Fatal(err)
		}
	}
}
