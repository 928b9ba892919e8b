package envelope

import (
	"errors"
	"fmt"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
)

// Kind says which message an envelope holds.
type Kind uint8

// The kinds, numbered as the fields of busmesh.v1.Envelope.
const (
	KindRequest  Kind = 1
	KindResponse Kind = 2
	KindFrame    Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindResponse:
		return "response"
	case KindFrame:
		return "frame"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Protocol is busmesh.v1.Protocol.
type Protocol uint8

// The protocols.
const (
	ProtocolHTTP Protocol = 1
	ProtocolGRPC Protocol = 2
)

// MaxHeaderFields bounds the name and value entries of one header list, so
// a hostile envelope cannot make the decoder build a huge slice.
const MaxHeaderFields = 2 * 1024

// MaxPathBytes bounds a request's path and query. Both sidecars hold to it:
// the ambassador answers a longer one 414 at once, the adapter drops an
// envelope that carries one.
const MaxPathBytes = 16 << 10

// ErrMalformed is wrapped by every decoding error: the input is not an
// envelope this version understands. Drop it; retrying cannot help.
var ErrMalformed = errors.New("malformed envelope")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// The Envelope fields that carry the sender's credentials. They are
// reserved now and written by the security layer; a sidecar without it
// skips them like any field it does not know.
const (
	fieldKeyID     = 10
	fieldPeerKeyID = 11
	fieldTimestamp = 12
	fieldCert      = 13
	// FieldMAC is the authentication code over every byte of the envelope
	// before it; it is written last.
	FieldMAC = 15
)

// Credentials are what an envelope says about its sender. All are empty
// when security is off.
type Credentials struct {
	KeyID     []byte // the sender's certificate fingerprint
	PeerKeyID []byte // the receiver's certificate the MAC key was agreed with
	Timestamp int64  // unix nanoseconds, for freshness
	Cert      []byte // the sender's certificate (DER), until the peer has it
	MAC       []byte
}

// Envelope is a decoded Envelope: which message it holds, the message
// still encoded, and the sender's credentials. Slices alias the input.
type Envelope struct {
	Kind Kind
	Msg  []byte
	Cred Credentials
}

// Open decodes the outer Envelope of data: exactly one message (request,
// response or frame), the credential fields, and any other field skipped,
// so that a newer sidecar's envelope is accepted.
func Open(data []byte) (Envelope, error) {
	var e Envelope
	d := decoder{b: data}
	for d.next() {
		switch d.num {
		case 1, 2, 3:
			if e.Kind != 0 {
				return Envelope{}, malformed("two messages in one envelope")
			}
			e.Kind = Kind(d.num)
			e.Msg = d.bytes()
		case fieldKeyID:
			e.Cred.KeyID = d.bytes()
		case fieldPeerKeyID:
			e.Cred.PeerKeyID = d.bytes()
		case fieldTimestamp:
			e.Cred.Timestamp = int64(d.fixed64())
		case fieldCert:
			e.Cred.Cert = d.bytes()
		case FieldMAC:
			e.Cred.MAC = d.bytes()
		default:
			d.skip()
		}
	}
	if d.err != nil {
		return Envelope{}, d.err
	}
	if e.Kind == 0 {
		return Envelope{}, malformed("no request, response or frame")
	}
	return e, nil
}

// Unwrap returns the kind of envelope data holds and the encoded message in
// it. The message aliases data.
func Unwrap(data []byte) (Kind, []byte, error) {
	e, err := Open(data)
	return e.Kind, e.Msg, err
}

// decoder walks the fields of one message.
type decoder struct {
	b   []byte
	num protowire.Number
	typ protowire.Type
	err error
}

// next advances to the next field; it returns false at the end or on error.
func (d *decoder) next() bool {
	if len(d.b) == 0 || d.err != nil {
		return false
	}
	num, typ, n := protowire.ConsumeTag(d.b)
	if n < 0 {
		d.err = malformed("bad tag")
		return false
	}
	d.num, d.typ, d.b = num, typ, d.b[n:]
	return true
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = malformed(fmt.Sprintf("field %d: %s", d.num, what))
	}
}

func (d *decoder) bytes() []byte {
	if d.typ != protowire.BytesType {
		d.fail("want length-delimited")
		d.skip()
		return nil
	}
	v, n := protowire.ConsumeBytes(d.b)
	if n < 0 {
		d.fail("truncated")
		return nil
	}
	d.b = d.b[n:]
	return v
}

// string returns a string that aliases the input: the decoder's input is
// owned by the receiver and never modified, so no copy is needed.
func (d *decoder) string() string {
	b := d.bytes()
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (d *decoder) varint() uint64 {
	if d.typ != protowire.VarintType {
		d.fail("want varint")
		d.skip()
		return 0
	}
	v, n := protowire.ConsumeVarint(d.b)
	if n < 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) fixed64() uint64 {
	if d.typ != protowire.Fixed64Type {
		d.fail("want fixed64")
		d.skip()
		return 0
	}
	v, n := protowire.ConsumeFixed64(d.b)
	if n < 0 {
		d.fail("truncated")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// header appends one header entry to list.
func (d *decoder) header(list []string) []string {
	s := d.string()
	if d.err != nil {
		return list
	}
	if len(list) >= MaxHeaderFields {
		d.fail(fmt.Sprintf("more than %d header entries", MaxHeaderFields))
		return list
	}
	return append(list, s)
}

// countFields counts the occurrences of field num in a message, so a
// header list can be sized once instead of grown. It stops quietly at
// malformed input; decoding reports it.
func countFields(b []byte, num protowire.Number) int {
	n := 0
	for len(b) > 0 {
		f, typ, m := protowire.ConsumeTag(b)
		if m < 0 {
			return n
		}
		b = b[m:]
		if f == num {
			n++
		}
		m = protowire.ConsumeFieldValue(f, typ, b)
		if m < 0 {
			return n
		}
		b = b[m:]
	}
	return n
}

// sized returns list emptied, with room for the n entries of a header
// field.
func sized(list []string, n int) []string {
	if cap(list) < n {
		return make([]string, 0, min(n, MaxHeaderFields+1))
	}
	return list[:0]
}

// PeekID returns the id of an encoded Request, Response or Frame (from
// Unwrap) without decoding it, when the id is its first field, as this
// package's encoders write it.
func PeekID(msg []byte) (uint64, bool) {
	if len(msg) < 9 || msg[0] != 0x09 { // field 1, fixed64
		return 0, false
	}
	id, _ := protowire.ConsumeFixed64(msg[1:])
	return id, true
}

// skip passes over a field this version does not know.
func (d *decoder) skip() {
	n := protowire.ConsumeFieldValue(d.num, d.typ, d.b)
	if n < 0 {
		if d.err == nil {
			d.err = malformed(fmt.Sprintf("field %d: bad value", d.num))
		}
		d.b = nil
		return
	}
	d.b = d.b[n:]
}

func (d *decoder) checkPairs(list []string) {
	if len(list)%2 != 0 && d.err == nil {
		d.err = malformed("header list has a name without a value")
	}
}

// Sizes and appenders for the encoders. Zero values are not written, as in
// proto3.

func sizeBytes(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func sizeVarint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeBool(num protowire.Number, v bool) int {
	if !v {
		return 0
	}
	return protowire.SizeTag(num) + 1
}

func sizeFixed64(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + 8
}

func sizeHeaders(num protowire.Number, list []string) int {
	n := 0
	for _, s := range list {
		n += protowire.SizeTag(num) + protowire.SizeBytes(len(s))
	}
	return n
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBool(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return append(b, 1)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func appendHeaders(b []byte, num protowire.Number, list []string) []byte {
	for _, s := range list {
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b
}

// wrap appends the Envelope field for kind and the length of a message of
// size bytes; the message itself follows.
func wrap(b []byte, kind Kind, size int) []byte {
	b = protowire.AppendTag(b, protowire.Number(kind), protowire.BytesType)
	return protowire.AppendVarint(b, uint64(size))
}
