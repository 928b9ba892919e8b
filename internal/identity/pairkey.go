package identity

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash"
	"sync"
)

// pairKeyInfo labels the HKDF output, so the key is used for nothing else.
const pairKeyInfo = "busmesh envelope mac v1"

// PairKey authenticates envelopes from one certificate to another: a
// 32-byte key agreed by X25519 between the sender's and the receiver's
// key-agreement keys and expanded by HKDF-SHA256 with both fingerprints,
// sender first, so the key for A→B differs from B→A and an envelope cannot
// be reflected back to its sender. It is safe for concurrent use; MACs are
// computed with pooled HMAC states, so the hot path allocates nothing.
type PairKey struct {
	sender, receiver KeyID
	pool             sync.Pool   // of *macState
	aead             cipher.AEAD // for sealed bodies (seal.go)
}

// macState is one HMAC-SHA256 keyed with the pair key, and room for a sum.
type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// Sender is the key id of the certificate that sends with this key.
func (k *PairKey) Sender() KeyID { return k.sender }

// Receiver is the key id of the certificate that receives with this key.
func (k *PairKey) Receiver() KeyID { return k.receiver }

// SendKey is the key for envelopes from this identity to peer, agreed on
// first use and then kept (up to DefaultMaxPeers peers).
func (id *Identity) SendKey(peer *Peer) (*PairKey, error) {
	if k, ok := id.send.get(peer.keyID); ok {
		return k, nil
	}
	k, err := derivePairKey(id, peer, id.keyID, peer.keyID)
	if err != nil {
		return nil, err
	}
	return id.send.add(peer.keyID, k), nil
}

// RecvKey is the key for envelopes from peer to this identity, agreed on
// first use and then kept (up to DefaultMaxPeers peers).
func (id *Identity) RecvKey(peer *Peer) (*PairKey, error) {
	if k, ok := id.recv.get(peer.keyID); ok {
		return k, nil
	}
	k, err := derivePairKey(id, peer, peer.keyID, id.keyID)
	if err != nil {
		return nil, err
	}
	return id.recv.add(peer.keyID, k), nil
}

func derivePairKey(id *Identity, peer *Peer, sender, receiver KeyID) (*PairKey, error) {
	shared, err := id.kex.ECDH(peer.kex)
	if err != nil {
		return nil, fmt.Errorf("key agreement with %s (%s): %w", peer.service, peer.keyID, err)
	}
	info := make([]byte, 0, len(pairKeyInfo)+2*len(sender))
	info = append(append(append(info, pairKeyInfo...), sender[:]...), receiver[:]...)
	key, err := hkdf.Key(sha256.New, shared, nil, string(info), sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive pair key with %s: %w", peer.service, err)
	}
	k := &PairKey{sender: sender, receiver: receiver}
	k.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	if k.aead, err = sealAEAD(shared, info); err != nil {
		return nil, fmt.Errorf("derive sealing key with %s: %w", peer.service, err)
	}
	return k, nil
}

// sum computes the MAC of msg into a pooled state; the caller puts the
// state back when done with st.sum.
func (k *PairKey) sum(msg []byte) *macState {
	st := k.pool.Get().(*macState)
	st.h.Reset()
	st.h.Write(msg)
	st.h.Sum(st.sum[:0])
	return st
}
