package stream

import (
	"io"
	"net/http"
	"time"
)

// How long Prompt.First holds a call's first message for a body whose
// source is slow: at most Settle in all, and no more than Gap after the
// last data came. What an application flushes then reaches the other side
// within Gap (Settle before its first byte), while a body that arrives in
// quick pieces still goes in one message.
const (
	Settle = 5 * time.Millisecond
	Gap    = 500 * time.Microsecond
)

// Prompt reads a body for a call: its first part for the call's first
// message (First), then the rest as an io.Reader for the frames (Read).
// Unlike ReadFirst it never holds back what a slow source has flushed (a
// Server-Sent Events stream, a long poll, a client streaming an upload):
// First returns what has come within Settle. A read still in progress then
// goes on in the background, into the buffer First was given, and Read
// takes its result first. Not safe for concurrent use.
type Prompt struct {
	body    io.Reader
	pending chan readResult // the read in flight, nil when none
	region  []byte          // what the read in flight fills
	rest    []byte          // read, not yet returned
	err     error           // the error after rest
}

type readResult struct {
	n   int
	err error
}

// First reads the part of body that goes in the call's first message, at
// most max bytes; more says the rest follows. contentLength is the
// declared length, -1 if unknown. A body of known length that fits is read
// whole (it is on its way); otherwise First returns once the body ends,
// max bytes are in, settle has passed, or nothing more has come for Gap
// after some data. The data is read into buf (see
// ReadFirst), which the caller must not reuse until Wait has returned.
func (p *Prompt) First(body io.Reader, buf *[]byte, max int, contentLength int64, settle time.Duration) (data []byte, more bool, err error) {
	p.body = body
	if contentLength == 0 || body == nil || body == http.NoBody {
		p.err = io.EOF
		return nil, false, nil
	}
	if contentLength > 0 && contentLength <= int64(max) {
		data, more, err = ReadFirst(body, buf, max, contentLength)
		if !more && err == nil {
			p.err = io.EOF
		}
		return data, more, err
	}
	b := (*buf)[:cap(*buf)]
	if len(b) == 0 {
		b = make([]byte, 4<<10)
	}
	defer func() { *buf = b[:0] }()
	deadline := time.Now().Add(settle)
	timer := time.NewTimer(settle)
	defer timer.Stop()
	done := make(chan readResult, 1)
	n := 0
	for n < max {
		if n == len(b) {
			b = grow(b, max)
		}
		region := b[n:min(len(b), max)]
		go func() {
			m, err := body.Read(region)
			done <- readResult{m, err}
		}()
		select {
		case r := <-done:
			n += r.n
			switch {
			case r.err == io.EOF:
				if contentLength > 0 && int64(n) < contentLength {
					return nil, false, io.ErrUnexpectedEOF // shorter than declared
				}
				p.err = io.EOF
				return b[:n], false, nil
			case r.err != nil:
				return nil, false, r.err
			case r.n > 0:
				timer.Reset(min(Gap, time.Until(deadline)))
			}
		case <-timer.C:
			p.pending, p.region = done, region
			return b[:n], true, nil
		}
	}
	return b[:n], true, nil
}

// Read implements io.Reader over the rest of the body, after First.
func (p *Prompt) Read(b []byte) (int, error) {
	if p.pending != nil {
		r := <-p.pending
		p.pending = nil
		p.rest, p.err = p.region[:r.n], r.err
	}
	if len(p.rest) > 0 {
		n := copy(b, p.rest)
		p.rest = p.rest[n:]
		return n, nil
	}
	if p.err != nil {
		return 0, p.err
	}
	return p.body.Read(b)
}

// Drained reports whether the buffer First was given holds nothing more
// to read: no read in progress fills it and what it read was returned.
// From then on the buffer may be reused, while Read goes on.
func (p *Prompt) Drained() bool { return p.pending == nil && len(p.rest) == 0 }

// Pending reports whether a read First started is still to be taken.
func (p *Prompt) Pending() bool { return p.pending != nil }

// Done reports whether no read First started is still in progress (it
// takes the result of one that has ended).
func (p *Prompt) Done() bool {
	if p.pending == nil {
		return true
	}
	select {
	case r := <-p.pending:
		p.pending = nil
		p.rest, p.err = p.region[:r.n], r.err
		return true
	default:
		return false
	}
}

// Wait waits for a read First left in progress, so that its buffer can be
// reused; the caller must first make the body's Read return (close it, or
// set a read deadline). The body is not read after Wait.
func (p *Prompt) Wait() {
	if p.pending != nil {
		r := <-p.pending
		p.pending = nil
		p.err = r.err
		if p.err == nil {
			p.err = io.ErrClosedPipe
		}
	}
}

var _ io.Reader = (*Prompt)(nil)
