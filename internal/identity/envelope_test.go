package identity_test

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
)

func TestMACFieldIsTheEnvelopes(t *testing.T) {
	if identity.MACField != envelope.FieldMAC {
		t.Fatalf("identity.MACField = %d, envelope.FieldMAC = %d: they must agree", identity.MACField, envelope.FieldMAC)
	}
}

// TestEnvelopeRoundTrip runs the whole design on a real envelope: the
// sender appends its credentials (busmesh.v1.Envelope fields 10 to 12) and
// the MAC; the receiver decodes it with internal/envelope, finds the keys
// by the ids it carries, verifies the MAC and checks freshness and replay.
func TestEnvelopeRoundTrip(t *testing.T) {
	p := newPair(t)
	send, err := p.web.SendKey(p.ordersPeer)
	if err != nil {
		t.Fatal(err)
	}
	req := &envelope.Request{ID: 7, Service: "orders", Method: "GET", Path: "/orders/1", Body: []byte("{}")}
	b := req.AppendEnvelope(nil)
	sender, receiver := send.Sender(), send.Receiver()
	b = protowire.AppendTag(b, 10, protowire.BytesType)
	b = protowire.AppendBytes(b, sender[:])
	b = protowire.AppendTag(b, 11, protowire.BytesType)
	b = protowire.AppendBytes(b, receiver[:])
	b = protowire.AppendTag(b, 12, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(time.Now().UnixNano()))
	wire := identity.AppendMAC(b, b, send)

	// The receiver.
	env, err := envelope.Open(wire)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	msg, mac, ok := identity.SplitMAC(wire)
	if !ok || !bytes.Equal(mac, env.Cred.MAC) {
		t.Fatalf("SplitMAC() = %x, %v; envelope.Open found MAC %x", mac, ok, env.Cred.MAC)
	}
	senderID, ok1 := identity.KeyIDFromBytes(env.Cred.KeyID)
	receiverID, ok2 := identity.KeyIDFromBytes(env.Cred.PeerKeyID)
	if !ok1 || !ok2 {
		t.Fatalf("key ids of %d and %d bytes", len(env.Cred.KeyID), len(env.Cred.PeerKeyID))
	}
	if receiverID != p.orders.KeyID() {
		t.Fatalf("addressed to %s, want orders %s", receiverID, p.orders.KeyID())
	}
	from, err := p.orders.Verifier().Resolve(senderID, env.Cred.Cert)
	if err != nil {
		t.Fatalf("Resolve(sender) = %v", err)
	}
	key, err := p.orders.RecvKey(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := identity.VerifyMAC(msg, mac, key); err != nil {
		t.Fatalf("VerifyMAC() = %v", err)
	}
	guard := identity.NewReplayGuard(identity.ReplayConfig{})
	if err := guard.Check(senderID, req.ID, env.Cred.Timestamp); err != nil {
		t.Fatalf("first Check() = %v", err)
	}
	if err := guard.Check(senderID, req.ID, env.Cred.Timestamp); err == nil {
		t.Fatal("second Check() of the same envelope = nil, want ErrReplay")
	}
	var got envelope.Request
	if err := got.Unmarshal(env.Msg); err != nil || got.Path != req.Path {
		t.Fatalf("request = %+v, %v; want path %s", got, err, req.Path)
	}
}
