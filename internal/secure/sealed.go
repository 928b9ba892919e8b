package secure

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
)

// fieldSealed is the Envelope field that replaces the request, response or
// frame of a sealed envelope: one byte of kind, then the message encrypted
// with the pair's sealing key (identity.PairKey.Seal). The broker sees the
// subject, the credential fields and ciphertext.
const fieldSealed = 4

// sealMessage replaces the message that opens b (an encoded envelope, so
// far the message alone) by its sealed form, in place.
func sealMessage(b []byte, key *identity.PairKey) ([]byte, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || typ != protowire.BytesType || num < 1 || num > 3 {
		return b, fmt.Errorf("seal: %w: no message to seal", envelope.ErrMalformed)
	}
	msg, m := protowire.ConsumeBytes(b[n:])
	if m < 0 {
		return b, fmt.Errorf("seal: %w: truncated message", envelope.ErrMalformed)
	}
	rest := b[n+m:]
	out := make([]byte, 0, len(b)+identity.SealOverhead+8)
	out = protowire.AppendTag(out, fieldSealed, protowire.BytesType)
	out = protowire.AppendVarint(out, uint64(1+len(msg)+identity.SealOverhead))
	out = append(out, byte(num))
	out = key.Seal(out, msg)
	out = append(out, rest...)
	return append(b[:0], out...), nil
}

// openSealed decodes a sealed envelope's outer fields: the sealed message
// (still encrypted) and the credentials.
func openSealed(msg []byte) (sealed []byte, cred envelope.Credentials, err error) {
	b := msg
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, cred, fmt.Errorf("%w: bad tag", envelope.ErrMalformed)
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == fieldSealed || num >= 10 && num <= 13):
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, cred, fmt.Errorf("%w: field %d truncated", envelope.ErrMalformed, num)
			}
			b = b[m:]
			switch num {
			case fieldSealed:
				sealed = v
			case 10:
				cred.KeyID = v
			case 11:
				cred.PeerKeyID = v
			case 13:
				cred.Cert = v
			}
		case typ == protowire.Fixed64Type && num == 12:
			v, m := protowire.ConsumeFixed64(b)
			if m < 0 {
				return nil, cred, fmt.Errorf("%w: field 12 truncated", envelope.ErrMalformed)
			}
			b = b[m:]
			cred.Timestamp = int64(v)
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, cred, fmt.Errorf("%w: field %d: bad value", envelope.ErrMalformed, num)
			}
			b = b[m:]
		}
	}
	if len(sealed) < 1+identity.SealOverhead {
		return nil, cred, fmt.Errorf("%w: sealed message too short", envelope.ErrMalformed)
	}
	return sealed, cred, nil
}

// isSealed reports whether an encoded envelope starts with a sealed
// message.
func isSealed(b []byte) bool {
	num, _, n := protowire.ConsumeTag(b)
	return n > 0 && num == fieldSealed
}
