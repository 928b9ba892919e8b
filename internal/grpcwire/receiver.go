package grpcwire

import (
	"context"
	"sync"
	"time"
)

// Settle is how long a sidecar waits, after a call's first message from
// either side, for that side's next message or end. A unary caller's end
// (and a unary answer's status) follows its message at once, so the call
// crosses the bus as one request and one response; a streaming side's first
// message waits at most this long.
const Settle = 2 * time.Millisecond

// MaxMessage is the largest gRPC message a sidecar passes: gRPC's own
// default of 4 MiB, or max_body_bytes when that is larger.
func MaxMessage(maxBodyBytes int64) int { return int(max(4<<20, maxBodyBytes)) }

// MessageStream is what grpc.ServerStream and grpc.ClientStream have in
// common for receiving.
type MessageStream interface {
	RecvMsg(m any) error
}

type received struct {
	data []byte
	err  error
}

// Receiver reads a stream's messages on a goroutine of its own, one ahead
// of the consumer, so the consumer can wait for the next message with a
// time limit: that is how a sidecar, knowing nothing of the method, tells a
// caller that has finished sending (a unary call) from one that is still
// streaming.
type Receiver struct {
	ch chan received
	wg sync.WaitGroup
}

// Receive starts reading s. The goroutine ends at the stream's end or
// error, or when ctx ends; Wait waits for it.
func Receive(ctx context.Context, s MessageStream) *Receiver {
	r := &Receiver{ch: make(chan received)}
	r.wg.Go(func() {
		for {
			var m Message
			err := s.RecvMsg(&m)
			select {
			case r.ch <- received{m.Data, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	})
	return r
}

// Next returns the next message; io.EOF at the stream's clean end.
func (r *Receiver) Next(ctx context.Context) ([]byte, error) {
	select {
	case m := <-r.ch:
		return m.data, m.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// within is Next until t fires; ok is false when nothing came before it
// (a later Next gets it).
func (r *Receiver) within(t *time.Timer) (data []byte, err error, ok bool) {
	select {
	case m := <-r.ch:
		return m.data, m.err, true
	case <-t.C:
		return nil, nil, false
	}
}

// Wait waits for the reading goroutine to end. The stream must be ending
// (its end was received, or its context cancelled).
func (r *Receiver) Wait() { r.wg.Wait() }

// First reads how a stream starts: its first message, if one comes within
// Settle, and, if that side has more to say within Settle after it, the
// second, length-prefixed as on the wire. body is empty when no message
// came within Settle: gRPC lets either side wait for the other before it
// sends (a client stream whose caller first reads the server's header, a
// server that sends its header and then waits for the caller's messages),
// so a side that sends nothing yet must not hold the call back. end is nil
// when the stream goes on (more to read), io.EOF when it ended cleanly
// within Settle, or the error it ended with.
func (r *Receiver) First(ctx context.Context) (body []byte, end error) {
	t := time.NewTimer(Settle) // one for both waits
	defer t.Stop()
	first, err, ok := r.within(t)
	switch {
	case !ok:
		return nil, ctx.Err()
	case err != nil:
		return nil, err
	}
	body = AppendMessage(nil, first)
	t.Reset(Settle)
	next, err, ok := r.within(t)
	switch {
	case !ok:
		return body, nil
	case err != nil:
		return body, err
	}
	return AppendMessage(body, next), nil
}
