package bus

import "context"

// Sealer adds the sender's credentials to an envelope about to be
// published: the credential fields and a MAC for the envelope's receiver,
// which the sealer finds from the subject (package secure). A Publisher
// without one publishes envelopes as they are (security off).
type Sealer interface {
	// Seal appends the credentials and MAC for the receiver of subject to
	// b, one encoded envelope, and returns the extended slice; an error
	// means the envelope cannot be sent (no key for that receiver).
	Seal(ctx context.Context, subject string, b []byte) ([]byte, error)
	// Overhead bounds the bytes Seal adds to an envelope.
	Overhead() int
}

// SetSealer makes p seal every envelope it publishes with s; MaxMessage
// shrinks by what sealing adds. Call it before p publishes anything or
// anyone sizes messages by MaxMessage.
func (p *Publisher) SetSealer(s Sealer) {
	p.sealer = s
	p.maxMsg -= s.Overhead()
}

// encode appends m, sealed when p has a Sealer, to buf.
func (p *Publisher) encode(ctx context.Context, subject string, buf *[]byte, m Message) error {
	*buf = m.AppendEnvelope(*buf)
	if p.sealer == nil {
		return nil
	}
	b, err := p.sealer.Seal(ctx, subject, *buf)
	*buf = b
	return err
}
