package discovery

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/internal/identity"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// chainLength is how many announcements one hash chain covers: a receiver
// checks an unchanged instance's signature about once per chainLength of
// its heartbeats (8.5 minutes at the default interval), and on every
// change, gap or rotation. A chain costs the sender 8 KiB.
const chainLength = 256

// certEvery: of the heartbeats that repeat the last claim, and so carry
// only the certificate's fingerprint, one in certEvery carries the
// certificate again, for receivers that missed it.
const certEvery = 16

// signatureField is the Announcement field that carries the signature,
// always last (proto/busmesh/v1/discovery.proto).
const signatureField protowire.Number = 19

// signatureSize is an Ed25519 signature's length.
const signatureSize = 64

// signatureHeader is the encoded tag and length of the signature field.
var signatureHeader = protowire.AppendVarint(protowire.AppendTag(nil, signatureField, protowire.BytesType), signatureSize)

// signatureOverhead is what the signature adds to an encoded announcement.
var signatureOverhead = len(signatureHeader) + signatureSize

// Signer signs the announcements of one instance with a sidecar's current
// identity, following its rotations. Each announcement with a sequence
// number carries its token of a hash chain the signer draws: a receiver
// that checked the signature of one announcement accepts a later one
// that claims nothing new by hashing its token forward, instead of
// checking another signature. Such a heartbeat carries the certificate's
// fingerprint instead of the certificate (400 bytes), except one in
// certEvery. Safe for concurrent use.
type Signer struct {
	src *identity.Source

	mu    sync.Mutex
	base  uint64                  // the seq that carries chain[0]
	chain [][sha256.Size]byte     // sha256(chain[k+1]) == chain[k]
	sent  *busmeshv1.Announcement // the claim last sent with the certificate
	key   identity.KeyID          // and that certificate's fingerprint
	bare  int                     // heartbeats sent since without it
}

// NewSigner returns a Signer for src's identity; nil if src is nil (no
// identity: announcements go unsigned).
func NewSigner(src *identity.Source) *Signer {
	if src == nil {
		return nil
	}
	return &Signer{src: src}
}

// token returns the chain token of seq; a seq before the chain or past
// its end starts a new chain. s.mu is held.
func (s *Signer) token(seq uint64) []byte {
	if s.chain == nil || seq < s.base || seq-s.base >= chainLength {
		s.chain = make([][sha256.Size]byte, chainLength)
		_, _ = rand.Read(s.chain[chainLength-1][:]) // never fails (crypto/rand)
		for k := chainLength - 2; k >= 0; k-- {
			s.chain[k] = sha256.Sum256(s.chain[k+1][:])
		}
		s.base = seq
	}
	t := s.chain[seq-s.base]
	return t[:]
}

// Marshal encodes m, sent to every watcher of its service, with the
// credentials: the current certificate (or, for a heartbeat that repeats
// the last claim sent with it, its fingerprint), the time, the chain
// token of m's seq (none when seq is 0) and, last, the signature over all
// of it. It sets m's credential fields. Call it with increasing seqs.
func (s *Signer) Marshal(m *busmeshv1.Announcement) ([]byte, error) { return s.encode(m, false) }

// MarshalFull is Marshal with the certificate whatever m is: for an
// answer to one asker, which may not have it.
func (s *Signer) MarshalFull(m *busmeshv1.Announcement) ([]byte, error) { return s.encode(m, true) }

func (s *Signer) encode(m *busmeshv1.Announcement, full bool) ([]byte, error) {
	id := s.src.Current()
	m.TimestampUnixNano = time.Now().UnixNano()
	m.Chain, m.Certificate, m.KeyId, m.Signature = nil, nil, nil, nil
	s.mu.Lock()
	if m.Seq != 0 {
		m.Chain = s.token(m.Seq)
	}
	repeat := m.Kind == busmeshv1.Announcement_KIND_HELLO && m.Seq > s.base && s.sent != nil &&
		s.key == id.KeyID() && sameClaim(s.sent, m)
	switch {
	case repeat && !full && s.bare < certEvery-1:
		s.bare++
		key := id.KeyID()
		m.KeyId = key[:]
	case m.Kind == busmeshv1.Announcement_KIND_HELLO:
		m.Certificate = id.Cert().Raw
		s.sent, s.key, s.bare = claimOf(m), id.KeyID(), 0
	default:
		m.Certificate = id.Cert().Raw
	}
	s.mu.Unlock()
	b, err := proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, proto.Size(m)+signatureOverhead), m)
	if err != nil {
		return nil, fmt.Errorf("encode announcement: %w", err)
	}
	sig, err := id.SignBroadcast(b)
	if err != nil {
		return nil, err
	}
	b = append(b, signatureHeader...)
	return append(b, sig...), nil
}

// marshal encodes m, signed when s is not nil; full as in MarshalFull.
func (s *Signer) marshal(m *busmeshv1.Announcement, full bool) ([]byte, error) {
	if s == nil {
		return proto.Marshal(m)
	}
	return s.encode(m, full)
}

// splitSignature returns what precedes the signature field at the end of
// b, and the signature; ok is false if b does not end with one.
func splitSignature(b []byte) (msg, sig []byte, ok bool) {
	n := len(b) - signatureOverhead
	if n < 0 || string(b[n:n+len(signatureHeader)]) != string(signatureHeader) {
		return b, nil, false
	}
	return b[:n], b[n+len(signatureHeader):], true
}
