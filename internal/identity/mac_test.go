package identity_test

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/busmesh/busmesh/internal/identity"
)

// pair is two services of one mesh that have verified each other.
type pair struct {
	web, orders         *identity.Identity
	webPeer, ordersPeer *identity.Peer // as the other side sees them
}

func newPair(t testing.TB) pair {
	t.Helper()
	m := newTestMesh(t, "prod")
	web, orders := m.identity(t, "web"), m.identity(t, "orders")
	return pair{web: web, orders: orders, webPeer: peer(t, orders, web), ordersPeer: peer(t, web, orders)}
}

// keys are the key web sends to orders with, and the one orders receives
// from web with.
func (p pair) keys(t testing.TB) (send, recv *identity.PairKey) {
	t.Helper()
	send, err := p.web.SendKey(p.ordersPeer)
	if err != nil {
		t.Fatal(err)
	}
	recv, err = p.orders.RecvKey(p.webPeer)
	if err != nil {
		t.Fatal(err)
	}
	return send, recv
}

// testEnvelope is a stand-in for an encoded envelope: a few protobuf
// fields, the last a body of n bytes.
func testEnvelope(n int) []byte {
	b := protowire.AppendTag(nil, 1, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 42)
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendString(b, "orders")
	b = protowire.AppendTag(b, 11, protowire.BytesType)
	return protowire.AppendBytes(b, bytes.Repeat([]byte{'x'}, n))
}

func TestMACRoundTrip(t *testing.T) {
	p := newPair(t)
	send, recv := p.keys(t)
	if send.Sender() != p.web.KeyID() || send.Receiver() != p.orders.KeyID() ||
		recv.Sender() != p.web.KeyID() || recv.Receiver() != p.orders.KeyID() {
		t.Fatal("pair keys do not name web as sender and orders as receiver")
	}
	for _, n := range []int{0, 1, 200, 16 << 10} {
		env := testEnvelope(n)
		b := identity.AppendMAC(append([]byte(nil), env...), env, send)
		if len(b) != len(env)+identity.MACOverhead {
			t.Fatalf("AppendMAC added %d bytes, want %d", len(b)-len(env), identity.MACOverhead)
		}
		msg, mac, ok := identity.SplitMAC(b)
		if !ok || !bytes.Equal(msg, env) {
			t.Fatalf("SplitMAC(%d-byte envelope) = %d bytes, ok %v; want the envelope", n, len(msg), ok)
		}
		if err := identity.VerifyMAC(msg, mac, recv); err != nil {
			t.Fatalf("VerifyMAC(%d-byte envelope) = %v", n, err)
		}
		// The MAC is a well-formed last field: a protobuf parser sees
		// field MACField with the MAC as its value.
		rest := b[len(env):]
		num, typ, tn := protowire.ConsumeTag(rest)
		v, vn := protowire.ConsumeBytes(rest[tn:])
		if num != identity.MACField || typ != protowire.BytesType || vn != len(rest)-tn || !bytes.Equal(v, mac) {
			t.Fatalf("trailer parses as field %d type %d (%d bytes), want field %d bytes", num, typ, vn, identity.MACField)
		}
	}
}

func TestMACRejectsTampering(t *testing.T) {
	p := newPair(t)
	send, recv := p.keys(t)
	env := testEnvelope(200)
	b := identity.AppendMAC(append([]byte(nil), env...), env, send)
	for i := range b {
		for _, flip := range []byte{0x01, 0x80} {
			c := append([]byte(nil), b...)
			c[i] ^= flip
			msg, mac, ok := identity.SplitMAC(c)
			if !ok {
				continue // the MAC field itself was broken: rejected as missing
			}
			if err := identity.VerifyMAC(msg, mac, recv); !errors.Is(err, identity.ErrBadMAC) {
				t.Fatalf("byte %d ^ %#x: VerifyMAC() = %v, want ErrBadMAC", i, flip, err)
			}
		}
	}
	for _, cut := range []int{1, identity.MACOverhead, len(b)} {
		msg, mac, ok := identity.SplitMAC(b[:len(b)-cut])
		if ok && identity.VerifyMAC(msg, mac, recv) == nil {
			t.Fatalf("cut %d bytes: still verifies", cut)
		}
	}
}

func TestMACRejectsOtherKeys(t *testing.T) {
	m := newTestMesh(t, "prod")
	web, orders, eve := m.identity(t, "web"), m.identity(t, "orders"), m.identity(t, "eve")
	key := func(k *identity.PairKey, err error) *identity.PairKey {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	webToOrders := key(web.SendKey(peer(t, web, orders)))
	env := testEnvelope(100)
	b := identity.AppendMAC(append([]byte(nil), env...), env, webToOrders)
	msg, mac, _ := identity.SplitMAC(b)

	tests := []struct {
		name    string
		key     *identity.PairKey
		wantErr error
	}{
		{"orders receiving from web", key(orders.RecvKey(peer(t, orders, web))), nil},
		{"reflected: web receiving from orders", key(web.RecvKey(peer(t, web, orders))), identity.ErrBadMAC},
		{"orders receiving from eve", key(orders.RecvKey(peer(t, orders, eve))), identity.ErrBadMAC},
		{"eve receiving from web", key(eve.RecvKey(peer(t, eve, web))), identity.ErrBadMAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := identity.VerifyMAC(msg, mac, tt.key); !errors.Is(err, tt.wantErr) {
				t.Errorf("VerifyMAC() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestSplitMACWithoutMAC(t *testing.T) {
	for _, in := range [][]byte{nil, {}, testEnvelope(10), bytes.Repeat([]byte{0x7a}, identity.MACOverhead-1)} {
		msg, mac, ok := identity.SplitMAC(in)
		if ok || mac != nil || !bytes.Equal(msg, in) {
			t.Errorf("SplitMAC(%x) = %x, %x, %v; want the input, nil, false", in, msg, mac, ok)
		}
	}
}

func TestMACDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	p := newPair(t)
	send, recv := p.keys(t)
	env := testEnvelope(200)
	buf := make([]byte, 0, len(env)+identity.MACOverhead)
	allocs := testing.AllocsPerRun(100, func() {
		b := identity.AppendMAC(append(buf[:0], env...), env, send)
		msg, mac, _ := identity.SplitMAC(b)
		if err := identity.VerifyMAC(msg, mac, recv); err != nil {
			t.Fatal(err)
		}
		if _, err := p.web.SendKey(p.ordersPeer); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("AppendMAC+SplitMAC+VerifyMAC+SendKey = %v allocations, want 0", allocs)
	}
}

func TestBroadcast(t *testing.T) {
	p := newPair(t)
	msg := []byte("announce web instance 1")
	sig, err := p.web.SignBroadcast(msg)
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), msg...)
	tampered[0] ^= 1
	orderSig, _ := p.orders.SignBroadcast(msg)

	tests := []struct {
		name    string
		msg     []byte
		sig     []byte
		wantErr error
	}{
		{"valid", msg, sig, nil},
		{"tampered message", tampered, sig, identity.ErrBadSignature},
		{"signed by another service", msg, orderSig, identity.ErrBadSignature},
		{"short signature", msg, sig[:10], identity.ErrBadSignature},
		{"no signature", msg, nil, identity.ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.webPeer.VerifyBroadcast(tt.msg, tt.sig); !errors.Is(err, tt.wantErr) {
				t.Errorf("VerifyBroadcast() = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
