// Package bus is where a sidecar's envelopes meet the broker: Publisher
// encodes and publishes every envelope a sidecar sends — requests, answers
// and stream frames alike — so what each envelope must carry about its
// sender (and, with security on, its credentials) is added in one place.
// Decoding what arrives is package envelope's; transport is package
// broker's.
package bus

import (
	"context"
	"sync"

	"github.com/busmesh/busmesh/broker"
)

// Message is an envelope message: envelope.Request, Response or Frame.
type Message interface {
	AppendEnvelope(b []byte) []byte
	EncodedSize() int
}

// Publisher publishes a sidecar's envelopes. It is safe for concurrent
// use.
type Publisher struct {
	b        broker.Broker
	returner broker.Returner // nil when the backend cannot return requests
	maxMsg   int
	sealer   Sealer // nil: security off
}

// NewPublisher returns the Publisher of a sidecar's envelopes on b.
func NewPublisher(b broker.Broker) *Publisher {
	p := &Publisher{b: b, maxMsg: broker.MaxMessageBytes(b)}
	p.returner, _ = b.(broker.Returner)
	return p
}

// Broker returns the broker the Publisher publishes on.
func (p *Publisher) Broker() broker.Broker { return p.b }

// MaxMessage is the largest envelope the broker carries, in bytes.
func (p *Publisher) MaxMessage() int { return p.maxMsg }

// Publish encodes m into a pooled buffer and publishes it to subject. It
// returns when the broker has taken the message (see broker.Broker); m is
// not kept.
func (p *Publisher) Publish(ctx context.Context, subject string, m Message) error {
	buf := GetBuffer()
	err := p.encode(ctx, subject, buf, m)
	if err == nil {
		err = p.b.Publish(ctx, subject, *buf)
	}
	PutBuffer(buf)
	return err
}

// PublishEncoded is Publish for an envelope already encoded
// (m.AppendEnvelope): it seals env when p seals, and publishes it. It is
// for copies encoded on the caller's path and published later, off it.
// env is not kept, but sealing may append to it.
func (p *Publisher) PublishEncoded(ctx context.Context, subject string, env []byte) error {
	if p.sealer != nil {
		var err error
		if env, err = p.sealer.Seal(ctx, subject, env); err != nil {
			return err
		}
	}
	return p.b.Publish(ctx, subject, env)
}

// PublishReturnable is Publish for a request: on a backend that can tell,
// a request nobody is subscribed to makes the broker call onReturn(token)
// soon after. Elsewhere it is Publish.
func (p *Publisher) PublishReturnable(ctx context.Context, subject string, m Message, token uint64, onReturn func(uint64)) error {
	if p.returner == nil {
		return p.Publish(ctx, subject, m)
	}
	buf := GetBuffer()
	err := p.encode(ctx, subject, buf, m)
	if err == nil {
		err = p.returner.PublishReturnable(ctx, subject, *buf, token, onReturn)
	}
	PutBuffer(buf)
	return err
}

// maxPooled keeps very large buffers (streamed bodies) out of the pool, so
// one large call does not pin its memory for good.
const maxPooled = 256 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// GetBuffer returns an empty buffer from the data path's pool.
func GetBuffer() *[]byte {
	b := bufPool.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// PutBuffer returns a buffer to the pool; the caller must not use it again.
func PutBuffer(b *[]byte) {
	if cap(*b) <= maxPooled {
		bufPool.Put(b)
	}
}
