package discovery

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// heartbeat is an owner's hello about orders/a.
func heartbeat(seq uint64, healthy bool) *busmeshv1.Announcement {
	return &busmeshv1.Announcement{Kind: busmeshv1.Announcement_KIND_HELLO, Service: "orders", Instance: "a",
		Sidecar: "sc-a", Incarnation: "inc", Healthy: healthy, Seq: seq, IntervalMs: 1000}
}

// marshalled signs a with s and decodes it back, as a receiver would.
func marshalled(t *testing.T, s *Signer, a *busmeshv1.Announcement) ([]byte, *busmeshv1.Announcement) {
	t.Helper()
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
	var got busmeshv1.Announcement
	if err := proto.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	return data, &got
}

// resign re-signs an altered announcement with s's identity, keeping its
// timestamp and credentials as set.
func resign(t *testing.T, s *Signer, a *busmeshv1.Announcement) []byte {
	t.Helper()
	return resignB(t, s, a)
}

func resignB(t testing.TB, s *Signer, a *busmeshv1.Announcement) []byte {
	t.Helper()
	a.Signature = nil
	b, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.src.Current().SignBroadcast(b)
	if err != nil {
		t.Fatal(err)
	}
	return append(append(b, signatureHeader...), sig...)
}

// TestCheckerRejects: each kind of bad announcement is rejected and
// counted under its reason; a good one is accepted.
func TestCheckerRejects(t *testing.T) {
	mesh := newTestCA(t, "shop")
	local, _ := mesh.issue(t, "web", "")
	orders, _ := mesh.issue(t, "orders", "")
	other, _ := mesh.issue(t, "billing", "")
	foreign, _ := newTestCA(t, "shop").issue(t, "orders", "")
	elsewhere, _ := newTestCA(t, "other").issue(t, "orders", "")

	cases := []struct {
		name   string
		make   func() []byte
		reason string // "" accepted
	}{
		{"signed by the service", func() []byte { b, _ := marshalled(t, NewSigner(orders), heartbeat(1, true)); return b }, ""},
		{"unsigned", func() []byte { b, _ := marshalled(t, nil, heartbeat(1, true)); return b }, "unauthenticated"},
		{"another service's certificate", func() []byte {
			b, _ := marshalled(t, NewSigner(other), heartbeat(1, true))
			return b
		}, "wrong-service"},
		{"another CA", func() []byte { b, _ := marshalled(t, NewSigner(foreign), heartbeat(1, true)); return b }, "unknown-ca"},
		{"another mesh", func() []byte { b, _ := marshalled(t, NewSigner(elsewhere), heartbeat(1, true)); return b }, "wrong-mesh"},
		{"altered after signing", func() []byte {
			_, a := marshalled(t, NewSigner(orders), heartbeat(1, true))
			sig := a.Signature
			a.Healthy = false
			b := resign(t, NewSigner(orders), a)
			copy(b[len(b)-signatureSize:], sig) // the old signature
			return b
		}, "bad-signature"},
		{"the service's certificate, another's signature", func() []byte {
			s := NewSigner(other)
			_, a := marshalled(t, s, heartbeat(1, true))
			a.Certificate = orders.Current().Cert().Raw
			return resign(t, s, a)
		}, "bad-signature"},
		{"stale", func() []byte {
			s := NewSigner(orders)
			_, a := marshalled(t, s, heartbeat(1, true))
			a.TimestampUnixNano = time.Now().Add(-time.Minute).UnixNano()
			return resign(t, s, a)
		}, "stale"},
		{"signature cut off", func() []byte {
			b, _ := marshalled(t, NewSigner(orders), heartbeat(1, true))
			return b[:len(b)-signatureOverhead]
		}, "unauthenticated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := telemetry.NewMetrics()
			ch := newChecker(local, newRejections(m), nil)
			data := c.make()
			var a busmeshv1.Announcement
			if err := proto.Unmarshal(data, &a); err != nil {
				t.Fatal(err)
			}
			if got := ch.check(data, &a); got != (c.reason == "") {
				t.Fatalf("check = %v, want %v (reason %q)", got, c.reason == "", c.reason)
			}
			if c.reason != "" {
				if got := testutil.ToFloat64(m.EnvelopesRejected.WithLabelValues("discovery", c.reason)); got != 1 {
					t.Errorf("rejected{reason=%q} = %v, want 1", c.reason, got)
				}
			}
		})
	}
}

// TestCheckerChain: once a signed hello is accepted, the same claim with
// a later seq is taken on its chain token without a signature check; a
// changed claim, a token that does not hash forward, a gap over
// maxChainGap or a goodbye need a good signature.
func TestCheckerChain(t *testing.T) {
	mesh := newTestCA(t, "shop")
	local, _ := mesh.issue(t, "web", "")
	orders, _ := mesh.issue(t, "orders", "")
	s := NewSigner(orders)
	ch := newChecker(local, newRejections(nil), nil)
	take := func(data []byte) bool {
		var a busmeshv1.Announcement
		if err := proto.Unmarshal(data, &a); err != nil {
			t.Fatal(err)
		}
		return ch.check(data, &a)
	}
	// badSig is the announcement with its signature spoilt: accepted only
	// on the chain.
	badSig := func(a *busmeshv1.Announcement) []byte {
		b, _ := marshalled(t, s, a)
		b[len(b)-1] ^= 1
		return b
	}
	if take(badSig(heartbeat(1, true))) {
		t.Fatal("a first hello with a bad signature was accepted")
	}
	if b, _ := marshalled(t, s, heartbeat(2, true)); !take(b) {
		t.Fatal("a signed hello was rejected")
	}
	if !take(badSig(heartbeat(3, true))) {
		t.Error("the next heartbeat, same claim, was not taken on its chain")
	}
	if !take(badSig(heartbeat(5, true))) {
		t.Error("a heartbeat after a lost one was not taken on its chain")
	}
	if take(badSig(heartbeat(5, true))) {
		t.Error("a repeated seq was taken on its chain")
	}
	if take(badSig(heartbeat(6, false))) {
		t.Error("a changed claim (unhealthy) was taken on the chain")
	}
	_, forged := marshalled(t, s, heartbeat(7, true))
	forged.Chain = make([]byte, 32)
	b := resign(t, s, forged)
	b[len(b)-1] ^= 1
	if take(b) {
		t.Error("a token that does not hash forward was accepted")
	}
	if take(badSig(heartbeat(7+maxChainGap+1, true))) {
		t.Error("a heartbeat past the gap was taken on the chain")
	}
	if b, _ := marshalled(t, s, heartbeat(30, true)); !take(b) {
		t.Error("a signed hello after the gap was rejected")
	}
	bye := heartbeat(31, true)
	bye.Kind = busmeshv1.Announcement_KIND_GOODBYE
	if take(badSig(bye)) {
		t.Error("a goodbye with a bad signature was accepted")
	}
	// A new chain every chainLength seqs: its first token needs the
	// signature, and is signed.
	for seq := uint64(32); seq < 32+2*chainLength; seq++ {
		if b, _ := marshalled(t, s, heartbeat(seq, true)); !take(b) {
			t.Fatalf("signed heartbeat %d rejected", seq)
		}
	}
}

// TestCheckerRotation: announcements signed after the sender's
// certificate was replaced are accepted, the first by its signature.
func TestCheckerRotation(t *testing.T) {
	mesh := newTestCA(t, "shop")
	local, _ := mesh.issue(t, "web", "")
	orders, dir := mesh.issue(t, "orders", "")
	s := NewSigner(orders)
	ch := newChecker(local, newRejections(nil), nil)
	take := func(seq uint64) bool {
		data, a := marshalled(t, s, heartbeat(seq, true))
		return ch.check(data, a)
	}
	if !take(1) || !take(2) {
		t.Fatal("heartbeats before the rotation rejected")
	}
	old := orders.Current().KeyID()
	mesh.issue(t, "orders", dir) // new files in place
	if err := orders.Reload(); err != nil {
		t.Fatal(err)
	}
	if orders.Current().KeyID() == old {
		t.Fatal("the identity did not rotate")
	}
	for seq := uint64(3); seq < 6; seq++ {
		if !take(seq) {
			t.Errorf("heartbeat %d after the rotation rejected", seq)
		}
	}
}

// TestCheckerInsecure: a sidecar without identity believes everything,
// signed or not, as before.
func TestCheckerInsecure(t *testing.T) {
	ch := newChecker(nil, newRejections(nil), nil)
	data, a := marshalled(t, nil, heartbeat(1, true))
	if !ch.check(data, a) {
		t.Error("an insecure checker rejected an unsigned hello")
	}
	orders, _ := newTestCA(t, "shop").issue(t, "orders", "")
	data, a = marshalled(t, NewSigner(orders), heartbeat(1, true))
	if !ch.check(data, a) {
		t.Error("an insecure checker rejected a signed hello")
	}
}

// TestSignerCertificate: heartbeats that repeat the last claim carry the
// certificate's fingerprint, one in certEvery the certificate; a change,
// a goodbye and an answer to one asker carry it. A receiver that never
// saw the certificate rejects a heartbeat without it (unknown-key) and
// takes the next one with it.
func TestSignerCertificate(t *testing.T) {
	mesh := newTestCA(t, "shop")
	local, _ := mesh.issue(t, "web", "")
	orders, _ := mesh.issue(t, "orders", "")
	s := NewSigner(orders)
	hasCert := func(a *busmeshv1.Announcement, full bool) bool {
		t.Helper()
		var data []byte
		var err error
		if full {
			data, err = s.MarshalFull(a)
		} else {
			data, err = s.Marshal(a)
		}
		if err != nil {
			t.Fatal(err)
		}
		var got busmeshv1.Announcement
		if err := proto.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Certificate) == 0 && len(got.KeyId) != 32 {
			t.Fatalf("seq %d carries neither certificate nor key id", a.Seq)
		}
		return len(got.Certificate) != 0
	}
	seq := uint64(0)
	next := func(healthy bool) *busmeshv1.Announcement { seq++; return heartbeat(seq, healthy) }
	if !hasCert(next(true), false) {
		t.Error("the first hello has no certificate")
	}
	with := 0
	for range 2 * certEvery {
		if hasCert(next(true), false) {
			with++
		}
	}
	if with != 2 {
		t.Errorf("%d of %d repeated heartbeats carried the certificate, want 2", with, 2*certEvery)
	}
	if !hasCert(next(false), false) {
		t.Error("a changed claim has no certificate")
	}
	if !hasCert(next(false), true) {
		t.Error("an answer (MarshalFull) has no certificate")
	}
	bye := next(false)
	bye.Kind = busmeshv1.Announcement_KIND_GOODBYE
	if !hasCert(bye, false) {
		t.Error("a goodbye has no certificate")
	}

	// A receiver that missed the certificate.
	m := telemetry.NewMetrics()
	ch := newChecker(local, newRejections(m), nil)
	s = NewSigner(orders)
	first, _ := marshalled(t, s, heartbeat(1, true)) // lost
	_ = first
	bare, a := marshalled(t, s, heartbeat(2, true))
	if len(a.Certificate) != 0 {
		t.Fatal("the second heartbeat carries the certificate")
	}
	if ch.check(bare, a) {
		t.Error("a heartbeat without certificate from an unknown one was accepted")
	}
	if got := testutil.ToFloat64(m.EnvelopesRejected.WithLabelValues("discovery", "unknown-key")); got != 1 {
		t.Errorf("rejected{unknown-key} = %v, want 1", got)
	}
	taken := false
	for seq := uint64(3); seq < 3+certEvery; seq++ {
		data, a := marshalled(t, s, heartbeat(seq, true))
		if ok := ch.check(data, a); ok && !taken {
			taken = true
			if len(a.Certificate) == 0 {
				t.Errorf("heartbeat %d without certificate taken before one with it", seq)
			}
		} else if taken && !ok {
			t.Errorf("heartbeat %d rejected after the certificate was seen", seq)
		}
	}
	if !taken {
		t.Errorf("no heartbeat taken in %d after the lost one", certEvery)
	}
}
