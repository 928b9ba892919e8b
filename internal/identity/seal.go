package identity

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
)

// sealKeyInfo labels the HKDF output of the sealing key, so that it differs
// from the MAC key agreed from the same secret.
const sealKeyInfo = "busmesh envelope seal v1"

// SealOverhead is what Seal adds to a plaintext: a random 12-byte nonce
// and a 16-byte tag.
const SealOverhead = 12 + 16

// sealAEAD is AES-256-GCM keyed by HKDF-SHA256 from the agreed secret,
// with a random nonce per message: instances of a service share their
// certificate, hence the key, so a counter nonce could repeat.
func sealAEAD(shared, info []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, shared, nil, sealKeyInfo+string(info[len(pairKeyInfo):]), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// Seal appends plaintext encrypted for the key's receiver (nonce, then
// ciphertext and tag) to dst and returns the extended slice. Safe for
// concurrent use.
func (k *PairKey) Seal(dst, plaintext []byte) []byte {
	return k.aead.Seal(dst, nil, plaintext, nil)
}

// Unseal appends the plaintext of sealed, made by Seal with the same pair
// key, to dst; an error wraps ErrBadMAC.
func (k *PairKey) Unseal(dst, sealed []byte) ([]byte, error) {
	out, err := k.aead.Open(dst, nil, sealed, nil)
	if err != nil {
		return nil, fmt.Errorf("sealed message: %w", ErrBadMAC)
	}
	return out, nil
}
