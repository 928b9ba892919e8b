package identity

import (
	"crypto/hmac"
	"crypto/sha256"

	"google.golang.org/protobuf/encoding/protowire"
)

// MACField is the protobuf field number that carries an envelope's MAC: a
// bytes field, always the last one of the encoded envelope. The envelope
// owner reserves this number in busmesh.v1.Envelope for it.
const MACField protowire.Number = 15

// MACSize is the length of a MAC: HMAC-SHA256.
const MACSize = sha256.Size

// MACOverhead is how many bytes AppendMAC adds: the field's tag and length
// (one byte each for MACField 15 and MACSize 32) and the MAC.
const MACOverhead = 2 + MACSize

// macHeader is the encoded tag and length of the MAC field.
var macHeader = protowire.AppendVarint(protowire.AppendTag(nil, MACField, protowire.BytesType), MACSize)

// AppendMAC computes the MAC of msg with key and appends it to dst as
// protobuf field MACField, returning the extended slice. msg is normally
// the encoded envelope, credential fields included, and dst the same
// buffer: b = AppendMAC(b, b, key). It does not allocate unless dst must
// grow (give it MACOverhead spare capacity), and keeps neither slice. Safe
// for concurrent use with the same key.
func AppendMAC(dst, msg []byte, key *PairKey) []byte {
	st := key.sum(msg)
	dst = append(dst, macHeader...)
	dst = append(dst, st.sum[:]...)
	key.pool.Put(st)
	return dst
}

// SplitMAC finds the MAC field AppendMAC put at the end of b and returns
// what precedes it and the MAC, both aliasing b. ok is false, with msg = b
// and mac = nil, if b does not end with a field of that shape. It only
// looks at the last MACOverhead bytes: whether the MAC is right is
// VerifyMAC's to say.
func SplitMAC(b []byte) (msg, mac []byte, ok bool) {
	n := len(b) - MACOverhead
	if n < 0 || string(b[n:n+len(macHeader)]) != string(macHeader) {
		return b, nil, false
	}
	return b[:n], b[n+len(macHeader):], true
}

// VerifyMAC checks that mac is msg's MAC under key, in constant time, and
// returns ErrBadMAC if not. It allocates nothing, keeps neither slice and
// is safe for concurrent use with the same key.
func VerifyMAC(msg, mac []byte, key *PairKey) error {
	if len(mac) != MACSize {
		return ErrBadMAC
	}
	st := key.sum(msg)
	ok := hmac.Equal(st.sum[:], mac)
	key.pool.Put(st)
	if !ok {
		return ErrBadMAC
	}
	return nil
}
