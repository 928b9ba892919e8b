package secure

import (
	"errors"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
)

var (
	// ErrUnauthenticated means an envelope carries no credentials: no MAC,
	// or no key ids.
	ErrUnauthenticated = errors.New("envelope without credentials")
	// ErrNotAddressed means an envelope's peer key id is none of this
	// sidecar's identities: it was sealed for another receiver.
	ErrNotAddressed = errors.New("envelope addressed to another identity")
	// ErrNoReceiver means the sealer knows no certificate for a subject's
	// receiver.
	ErrNoReceiver = errors.New("no certificate for the receiver")
)

// Reason is the envelopes_rejected_total label for an error of Open:
// "unauthenticated", "wrong-receiver", "malformed", or identity.Reason's
// ("unknown-ca", "expired", "bad-mac", "stale", "replay", ...).
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		return "unauthenticated"
	case errors.Is(err, ErrNotAddressed):
		return "wrong-receiver"
	case errors.Is(err, envelope.ErrMalformed):
		return "malformed"
	}
	return identity.Reason(err)
}
