package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/envelope"
)

// ErrTooLarge is returned by Copy when the body exceeds its limit.
var ErrTooLarge = errors.New("body exceeds max_body_bytes")

// ErrReadBody is wrapped by Copy's errors that come from reading the body,
// not from sending it.
var ErrReadBody = errors.New("read body")

// Sender sends the frames of one direction of a call, numbering them and
// respecting the receiver's window. It is not safe for concurrent use.
type Sender struct {
	Pub     *bus.Publisher
	Subject string // the receiver's inbox
	ID      uint64
	Source  string // the caller's sidecar id, on frames the caller sends
	Window  *Window
	// Tap, when set, sees every data frame before it is sent (data is
	// reused after: it must copy what it keeps). A request body that may
	// be sent again is kept this way.
	Tap func(data []byte, end bool)

	seq uint32
}

// Send sends data as a data frame (end marks the last, with trailers),
// in parts when the receiver's window holds less.
func (s *Sender) Send(ctx context.Context, data []byte, end bool, trailers []string) error {
	if s.Tap != nil {
		s.Tap(data, end)
	}
	for {
		got, err := s.Window.TakeUpTo(ctx, Cost(len(data)))
		if err != nil {
			return err
		}
		n := min(len(data), max(int(got-FrameCost), 1)) // a window under FrameCost still moves
		last := n == len(data)
		s.seq++
		f := envelope.Frame{ID: s.ID, Seq: s.seq, Data: data[:n], End: end && last, Source: s.Source}
		if f.End {
			f.Trailers = trailers
		}
		if err := s.Pub.Publish(ctx, s.Subject, &f); err != nil {
			return err
		}
		if last {
			return nil
		}
		data = data[n:]
	}
}

// SendChunked sends data as data frames of at most chunk bytes each, none
// marked end: a gRPC message larger than one broker message travels in
// pieces, as it would in HTTP/2 DATA frames.
func (s *Sender) SendChunked(ctx context.Context, data []byte, chunk int) error {
	for {
		n := min(len(data), chunk)
		if err := s.Send(ctx, data[:n], false, nil); err != nil {
			return err
		}
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
}

// Copy sends what it reads from r as data frames of at most len(buf) bytes,
// the last one marked end (with trailers(), if trailers is set), until r is
// exhausted. With fill, it fills buf before sending (for a body of known
// length); without, it sends each read as it comes, so a streaming response
// is not held back. sent counts the bytes before it, for limit: more than
// limit bytes in all fails with ErrTooLarge before they are sent.
func (s *Sender) Copy(ctx context.Context, r io.Reader, buf []byte, fill bool, sent, limit int64, trailers func() []string) (int64, error) {
	for {
		var n int
		var err error
		if fill {
			n, err = io.ReadFull(r, buf)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
		} else {
			n, err = r.Read(buf)
		}
		sent += int64(n)
		if sent > limit {
			return sent, ErrTooLarge
		}
		if done, err := s.sendRead(ctx, buf[:n], err, trailers); done {
			return sent, err
		}
	}
}

// sendRead sends what one read of a body gave: data, as the last frame
// (with trailers(), if set) when rerr is io.EOF. done tells that the body
// is over: it ended, it failed to read (err wraps ErrReadBody; the data
// that came with the error is sent first), or a frame could not be sent.
func (s *Sender) sendRead(ctx context.Context, data []byte, rerr error, trailers func() []string) (done bool, err error) {
	if rerr == io.EOF {
		var t []string
		if trailers != nil {
			t = trailers()
		}
		return true, s.Send(ctx, data, true, t)
	}
	if len(data) > 0 {
		if err := s.Send(ctx, data, false, nil); err != nil {
			return true, err
		}
	}
	if rerr != nil {
		return true, fmt.Errorf("%w: %w", ErrReadBody, rerr)
	}
	return false, nil
}

// smallRead is the read buffer of a quiet long-lived stream (Relay).
const smallRead = 4 << 10

// relayBuffers are Relay's large buffers, shared while a stream moves
// bulk and returned once it goes quiet.
var relayBuffers sync.Pool

// Relay sends what it reads from r as data frames until r ends, the last
// frame marked end, as Copy without fill does, for a stream that may stay
// open and quiet for hours (an upgraded connection: a WebSocket). It reads
// into a 4 KiB buffer, and into a pooled one of chunk bytes only while
// reads fill the small one: a thousand idle WebSockets hold 4 MiB, not a
// thousand chunks, and a bulk transfer still travels in frames of up to
// chunk bytes.
func (s *Sender) Relay(ctx context.Context, r io.Reader, chunk int) (int64, error) {
	small := make([]byte, smallRead)
	var big *[]byte
	defer func() {
		if big != nil {
			relayBuffers.Put(big)
		}
	}()
	var sent int64
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, err := r.Read(buf)
		sent += int64(n)
		if done, err := s.sendRead(ctx, buf[:n], err, nil); done {
			return sent, err
		}
		switch {
		case big == nil && n == len(small) && chunk > len(small):
			// A read filled the small buffer: more is waiting.
			big = takeRelayBuffer(chunk)
		case big != nil && n < len(small):
			// Quiet again: the next read may wait a long time.
			relayBuffers.Put(big)
			big = nil
		}
	}
}

// takeRelayBuffer returns a pooled buffer of chunk bytes.
func takeRelayBuffer(chunk int) *[]byte {
	if b, ok := relayBuffers.Get().(*[]byte); ok && len(*b) == chunk {
		return b
	}
	b := make([]byte, chunk)
	return &b
}

// Cancel tells the other side of call id to stop, with a reason.
func Cancel(ctx context.Context, p *bus.Publisher, subject string, id uint64, source, reason string) error {
	f := envelope.Frame{ID: id, Cancel: true, Error: reason, Source: source}
	return p.Publish(ctx, subject, &f)
}

// Grant sends a window update for call id.
func Grant(ctx context.Context, p *bus.Publisher, subject string, id uint64, source string, n int64) error {
	f := envelope.Frame{ID: id, WindowUpdate: uint32(min(n, 1<<31)), Source: source}
	return p.Publish(ctx, subject, &f)
}
