package identity

import "errors"

// Sentinel errors. Every error a peer's certificate, envelope or
// announcement can cause wraps one of them, so callers count rejections by
// Reason and branch with errors.Is. None is worth a retry with the same
// input: the caller rejects what it was given.
var (
	// ErrUnknownCA means a certificate does not chain to this mesh's CA.
	ErrUnknownCA = errors.New("certificate not signed by the mesh CA")
	// ErrExpired means a certificate is outside its validity period, beyond
	// the allowed clock skew.
	ErrExpired = errors.New("certificate expired or not yet valid")
	// ErrWrongMesh means a certificate names another mesh.
	ErrWrongMesh = errors.New("certificate of another mesh")
	// ErrMalformed means a certificate or key cannot be parsed or lacks what
	// a busmesh certificate must have (service name, key-agreement key).
	ErrMalformed = errors.New("malformed certificate")
	// ErrUnknownKey means a key id names no identity this sidecar holds, or
	// no peer it has verified: the sender should learn the current
	// certificate (discovery) before sending again.
	ErrUnknownKey = errors.New("unknown key id")
	// ErrBadMAC means an envelope's MAC is missing or does not match: the
	// envelope was altered or not made with the pair key.
	ErrBadMAC = errors.New("message authentication failed")
	// ErrBadSignature means a broadcast's signature does not verify.
	ErrBadSignature = errors.New("signature verification failed")
	// ErrStale means a timestamp is further from now than the allowed skew.
	ErrStale = errors.New("timestamp outside the allowed clock skew")
	// ErrReplay means an (id, timestamp) pair was already accepted.
	ErrReplay = errors.New("replayed envelope")
	// ErrReplayFull means the replay guard holds as many ids as it may; the
	// envelope is refused rather than admitted unchecked. Treat it as
	// overload.
	ErrReplayFull = errors.New("replay guard full")
)

// reasons maps each sentinel to its metric label, in the order Reason tries
// them.
var reasons = []struct {
	err   error
	label string
}{
	{ErrUnknownCA, "unknown-ca"},
	{ErrExpired, "expired"},
	{ErrWrongMesh, "wrong-mesh"},
	{ErrMalformed, "malformed"},
	{ErrUnknownKey, "unknown-key"},
	{ErrBadMAC, "bad-mac"},
	{ErrBadSignature, "bad-signature"},
	{ErrStale, "stale"},
	{ErrReplay, "replay"},
	{ErrReplayFull, "replay-full"},
}

// Reason is a short label for err, for counting rejections (the style of
// the adapter's envelopes_rejected_total reasons):
// "unknown-ca", "expired", "wrong-mesh", "malformed", "unknown-key",
// "bad-mac", "bad-signature", "stale", "replay", "replay-full"; "" for nil
// and "other" for any other error. It is safe for concurrent use.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "other"
}
