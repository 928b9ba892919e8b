package stream

import (
	"context"
	"sync"

	"github.com/busmesh/busmesh/broker"
)

// Message is an envelope message: envelope.Request, Response or Frame.
type Message interface {
	AppendEnvelope(b []byte) []byte
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

// Publish encodes m into a pooled buffer and publishes it to subject.
func Publish(ctx context.Context, b broker.Broker, subject string, m Message) error {
	buf := GetBuffer()
	*buf = m.AppendEnvelope(*buf)
	err := b.Publish(ctx, subject, *buf)
	PutBuffer(buf)
	return err
}
