package secure_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/testutil"
)

// pair is a caller's and a service's Guard of one mesh, the caller bound
// to send to the service's inbox and the other way round.
type pair struct {
	caller, service *secure.Guard
	callerID        *identity.Identity
	serviceID       *identity.Identity
}

func newPair(t testing.TB) *pair {
	t.Helper()
	ca := testutil.NewMeshCA(t, broker.DefaultMesh)
	cs, ss := ca.Source(t, "web"), ca.Source(t, "orders")
	p := &pair{caller: secure.New(secure.Options{Source: cs}), service: secure.New(secure.Options{Source: ss}),
		callerID: cs.Current(), serviceID: ss.Current()}
	servicePeer, err := p.callerID.VerifyPeer(p.serviceID.Cert().Raw)
	if err != nil {
		t.Fatal(err)
	}
	callerPeer, err := p.serviceID.VerifyPeer(p.callerID.Cert().Raw)
	if err != nil {
		t.Fatal(err)
	}
	p.caller.Bind("to-service", secure.Sender{Peer: servicePeer, Local: p.callerID})
	p.service.Bind("to-caller", secure.Sender{Peer: callerPeer, Local: p.serviceID})
	return p
}

func sealed(t testing.TB, g *secure.Guard, subject string, m interface{ AppendEnvelope([]byte) []byte }) []byte {
	t.Helper()
	b, err := g.Seal(context.Background(), subject, m.AppendEnvelope(nil))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	p := newPair(t)
	// The service has not seen the caller's certificate: a bound subject
	// carries none, so learn it first, as a request would carry it.
	frame := &envelope.Frame{ID: 7, Seq: 1, Data: []byte("data")}
	data := sealed(t, p.caller, "to-service", frame)
	e, from, err := p.service.Open(data)
	if err != nil {
		t.Fatalf("Open = %v", err)
	}
	if e.Kind != envelope.KindFrame || from.Peer.Service() != "web" || from.Local != p.serviceID {
		t.Errorf("Open = %v from %s to %v", e.Kind, from.Peer.Service(), from.Local.Service())
	}
	if _, _, err := p.service.Open(data); secure.Reason(err) != "replay" {
		t.Errorf("second Open = %v, want replay", err)
	}
	answer := sealed(t, p.service, "to-caller", &envelope.Response{ID: 7, Status: 200})
	if _, from, err := p.caller.Open(answer); err != nil || from.Peer.Service() != "orders" {
		t.Errorf("caller Open(answer) = %v", err)
	}
	// An envelope sealed for the service does not open at the caller.
	if _, _, err := p.caller.Open(sealed(t, p.caller, "to-service", frame)); secure.Reason(err) != "wrong-receiver" {
		t.Errorf("Open(for another) = %v, want wrong-receiver", err)
	}
	if _, _, err := p.service.Open(frame.AppendEnvelope(nil)); !errors.Is(err, secure.ErrUnauthenticated) {
		t.Errorf("Open(plain) = %v, want unauthenticated", err)
	}
	tampered := sealed(t, p.caller, "to-service", frame)
	tampered[bytes.Index(tampered, []byte("data"))] ^= 1
	if _, _, err := p.service.Open(tampered); secure.Reason(err) != "bad-mac" {
		t.Errorf("Open(tampered) = %v, want bad-mac", err)
	}
	if _, err := p.caller.Seal(context.Background(), "nowhere", frame.AppendEnvelope(nil)); !errors.Is(err, secure.ErrNoReceiver) {
		t.Errorf("Seal(unbound subject) = %v, want ErrNoReceiver", err)
	}
}

// TestStampsIncrease: envelopes sealed in the same nanosecond still differ
// in timestamp, so the receiver's replay guard takes them all.
func TestStampsIncrease(t *testing.T) {
	p := newPair(t)
	f := &envelope.Frame{ID: 9, WindowUpdate: 1}
	for i := range 1000 {
		if _, _, err := p.service.Open(sealed(t, p.caller, "to-service", f)); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
}

// FuzzOpen feeds arbitrary bytes to the verifier: it never panics, and
// nothing but the sealed envelope it was seeded with (once) opens.
func FuzzOpen(f *testing.F) {
	p := newPair(f)
	valid := sealed(f, p.caller, "to-service", &envelope.Request{ID: 1, Service: "orders", Path: "/x", Body: []byte("b")})
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add([]byte{})
	f.Add(append([]byte{0x0a, 0}, valid[2:]...))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, from, err := p.service.Open(b)
		if err == nil && (from.Peer == nil || from.Local == nil || e.Kind == 0) {
			t.Fatalf("Open accepted %x without a sender", b)
		}
		if err != nil && secure.Reason(err) == "" {
			t.Fatalf("error %v has no reason", err)
		}
	})
}

func BenchmarkSealOpen(b *testing.B) {
	p := newPair(b)
	req := envelope.Request{ID: 1, Source: "web-1", SourceService: "web", Service: "orders", Protocol: envelope.ProtocolHTTP,
		Method: "POST", Path: "/orders/7", Headers: []string{"Content-Type", "application/json"}, Body: bytes.Repeat([]byte("x"), 128),
		ReplyTo: "busmesh.default.inbox.web-1"}
	buf := make([]byte, 0, 1024)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		req.ID++
		var err error
		buf, err = p.caller.Seal(ctx, "to-service", req.AppendEnvelope(buf[:0]))
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := p.service.Open(buf); err != nil {
			b.Fatal(err)
		}
	}
}
