package secure_test

import (
	"bytes"
	"testing"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/secure"
)

// TestSealedRoundTrip: what a sidecar sends back to a peer that sealed
// is sealed; the receiver opens it; an altered sealed envelope fails.
func TestSealedRoundTrip(t *testing.T) {
	p := newPair(t)
	callerPeer, err := p.serviceID.VerifyPeer(p.callerID.Cert().Raw)
	if err != nil {
		t.Fatal(err)
	}
	servicePeer, err := p.callerID.VerifyPeer(p.serviceID.Cert().Raw)
	if err != nil {
		t.Fatal(err)
	}
	// Each side heard a sealed envelope from the other: it seals back.
	p.caller.Bind("to-service", secure.Sender{Peer: servicePeer, Local: p.callerID, Sealed: true})
	p.service.Bind("to-caller", secure.Sender{Peer: callerPeer, Local: p.serviceID, Sealed: true})
	secret := []byte("the secret body")
	data := sealed(t, p.caller, "to-service", &envelope.Frame{ID: 3, Seq: 1, Data: secret})
	if bytes.Contains(data, secret) {
		t.Fatal("a sealed envelope shows its data")
	}
	e, from, err := p.service.Open(data)
	if err != nil {
		t.Fatalf("Open(sealed) = %v", err)
	}
	var f envelope.Frame
	if err := f.Unmarshal(e.Msg); err != nil || e.Kind != envelope.KindFrame || !from.Sealed || !bytes.Equal(f.Data, secret) {
		t.Fatalf("Open(sealed) = %v %+v sealed=%v (%v)", e.Kind, f, from.Sealed, err)
	}
	answer := sealed(t, p.service, "to-caller", &envelope.Response{ID: 3, Status: 200, Body: secret})
	if bytes.Contains(answer, secret) {
		t.Fatal("the answer to a sealed envelope is not sealed")
	}
	if _, from, err := p.caller.Open(answer); err != nil || !from.Sealed {
		t.Fatalf("Open(sealed answer) = %v, sealed=%v", err, from.Sealed)
	}
	tampered := sealed(t, p.caller, "to-service", &envelope.Frame{ID: 3, Seq: 2, Data: secret})
	tampered[10] ^= 1
	if _, _, err := p.service.Open(tampered); secure.Reason(err) != "bad-mac" {
		t.Errorf("Open(tampered sealed) = %v, want bad-mac", err)
	}
}
