package identity

import (
	"crypto/ed25519"
	"fmt"
)

// broadcastOptions make broadcast signatures Ed25519ctx with their own
// context string, so that no other signature by the same key (the CA's
// certificate signatures are by another key anyway) can pass for one.
var broadcastOptions = &ed25519.Options{Context: "busmesh broadcast v1"}

// SignBroadcast signs msg, a message with no single receiver such as a
// discovery announcement, so that any sidecar of the mesh can check it
// with the sender's certificate (Peer.VerifyBroadcast). The message should
// carry the certificate (Cert().Raw) and its own timestamp, which the
// receiver checks for freshness. It costs an Ed25519 signature; envelopes
// to one receiver use AppendMAC instead. Safe for concurrent use; msg is
// not kept.
func (id *Identity) SignBroadcast(msg []byte) ([]byte, error) {
	sig, err := id.sign.Sign(nil, msg, broadcastOptions)
	if err != nil {
		return nil, fmt.Errorf("sign broadcast: %w", err)
	}
	return sig, nil
}

// VerifyBroadcast checks sig, made by SignBroadcast, over msg with the
// peer's signing key, and returns an error wrapping ErrBadSignature if it
// does not verify. Safe for concurrent use; neither slice is kept.
func (p *Peer) VerifyBroadcast(msg, sig []byte) error {
	if err := ed25519.VerifyWithOptions(p.sign, msg, sig, broadcastOptions); err != nil {
		return fmt.Errorf("broadcast from %s (%s): %w", p.service, p.keyID, ErrBadSignature)
	}
	return nil
}
