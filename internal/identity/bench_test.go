package identity_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

var benchSizes = []struct {
	name string
	n    int
}{{"200B", 200}, {"16KiB", 16 << 10}}

// BenchmarkMAC is the per-envelope cost of the chosen design: the sender's
// AppendMAC and the receiver's SplitMAC and VerifyMAC.
func BenchmarkMAC(b *testing.B) {
	p := newPair(b)
	send, recv := p.keys(b)
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			env := testEnvelope(size.n)
			buf := make([]byte, 0, len(env)+identity.MACOverhead)
			b.SetBytes(int64(len(env)))
			b.ReportAllocs()
			for b.Loop() {
				w := identity.AppendMAC(append(buf[:0], env...), env, send)
				msg, mac, _ := identity.SplitMAC(w)
				if err := identity.VerifyMAC(msg, mac, recv); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEd25519 is what signing every envelope would cost instead: one
// Ed25519 signature and one verification.
func BenchmarkEd25519(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			env := testEnvelope(size.n)
			b.SetBytes(int64(len(env)))
			b.ReportAllocs()
			for b.Loop() {
				if !ed25519.Verify(pub, env, ed25519.Sign(priv, env)) {
					b.Fatal("does not verify")
				}
			}
		})
	}
}

// BenchmarkAdmit is the adapter's whole check of a 200-byte envelope with
// a known sender: split, find the sender and the local identity, the pair
// key, the MAC, and the replay guard.
func BenchmarkAdmit(b *testing.B) {
	m := newTestMesh(b, "prod")
	web := m.identity(b, "web")
	dir := b.TempDir()
	certFile, keyFile := m.issue(b, dir, "orders", time.Hour, time.Now())
	src, err := identity.NewSource(identity.SourceConfig{CertFile: certFile, KeyFile: keyFile, CAFile: m.caFile()})
	if err != nil {
		b.Fatal(err)
	}
	orders := src.Current()
	peer(b, orders, web) // announced earlier
	send, err := web.SendKey(peer(b, web, orders))
	if err != nil {
		b.Fatal(err)
	}
	guard := identity.NewReplayGuard(identity.ReplayConfig{})
	env := testEnvelope(200)
	wire := identity.AppendMAC(append([]byte(nil), env...), env, send)
	var id atomic.Uint64
	b.SetBytes(int64(len(env)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			msg, mac, ok := identity.SplitMAC(wire)
			if !ok {
				b.Fatal("no MAC")
			}
			// The credential fields would be decoded from msg here.
			sender, err := orders.Verifier().Peer(web.KeyID())
			if err != nil {
				b.Fatal(err)
			}
			local, err := src.Local(send.Receiver())
			if err != nil {
				b.Fatal(err)
			}
			key, err := local.RecvKey(sender)
			if err != nil {
				b.Fatal(err)
			}
			if err := identity.VerifyMAC(msg, mac, key); err != nil {
				b.Fatal(err)
			}
			if err := guard.Check(sender.KeyID(), id.Add(1), time.Now().UnixNano()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyPeerCached is VerifyPeer of a certificate seen before: a
// SHA-256 of the DER and a map lookup.
func BenchmarkVerifyPeerCached(b *testing.B) {
	m := newTestMesh(b, "prod")
	web, orders := m.identity(b, "web"), m.identity(b, "orders")
	der := orders.Cert().Raw
	peer(b, web, orders)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := web.VerifyPeer(der); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyPeerFirst is VerifyPeer of a certificate not seen before:
// parsing and checking the chain.
func BenchmarkVerifyPeerFirst(b *testing.B) {
	m := newTestMesh(b, "prod")
	der := m.certDER(b, "orders", time.Hour, time.Now())
	b.ReportAllocs()
	for b.Loop() {
		v, err := identity.NewVerifier(m.ca.Cert(), 0, 1)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := v.VerifyPeer(der); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplayGuard is Check of fresh ids from all cores at once.
func BenchmarkReplayGuard(b *testing.B) {
	g := identity.NewReplayGuard(identity.ReplayConfig{MaxEntries: 1 << 24})
	var id atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := g.Check(identity.KeyID{1}, id.Add(1), time.Now().UnixNano()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkPeerByKeyID is the per-envelope lookup of a sender verified
// before (from its announcement), by the key id the envelope carries.
func BenchmarkPeerByKeyID(b *testing.B) {
	m := newTestMesh(b, "prod")
	web, orders := m.identity(b, "web"), m.identity(b, "orders")
	peer(b, web, orders)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := web.Verifier().Peer(orders.KeyID()); err != nil {
			b.Fatal(err)
		}
	}
}
