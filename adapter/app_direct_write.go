package adapter

import (
	"bytes"
	"io"
	"net"
	"sync"
)

// requestWriterSize is how much of a request a requestWriter collects
// before it writes: a head, or a head with a small body, goes in one
// system call.
const requestWriterSize = 4096

// requestWriter is what a directConn's requests are written to by
// net/http's Request.Write. It collects the head, and sends a body that is
// in hand (the envelope's bytes) with the head in one system call, without
// copying it. Through a bufio.Writer a body past its buffer went out in
// two writes, and net's generic copy allocated a buffer the size of the
// body for each call.
//
// Request.Write takes it as it is (it is an io.ByteWriter) rather than
// wrapping it in a bufio.Writer of its own; flush sends what is collected.
// Request.Write flushes a bufio.Writer after each chunk of a chunked body,
// which this writer would hold back: a request of unknown length goes to
// net/http's Transport instead (directTransport.RoundTrip).
type requestWriter struct {
	conn net.Conn
	buf  []byte
	vec  [2][]byte   // the head and the body, for one writev
	bufs net.Buffers // vec's slice, kept here so that it does not escape
	body heldSlice   // likewise
}

func newRequestWriter(conn net.Conn) *requestWriter {
	return &requestWriter{conn: conn, buf: make([]byte, 0, requestWriterSize)}
}

func (w *requestWriter) Write(p []byte) (int, error) {
	if len(w.buf)+len(p) > requestWriterSize {
		if err := w.flush(); err != nil {
			return 0, err
		}
		if len(p) >= requestWriterSize {
			return w.conn.Write(p)
		}
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *requestWriter) WriteString(s string) (int, error) {
	if len(w.buf)+len(s) > requestWriterSize {
		return w.Write([]byte(s))
	}
	w.buf = append(w.buf, s...)
	return len(s), nil
}

func (w *requestWriter) WriteByte(c byte) error {
	if len(w.buf) == requestWriterSize {
		if err := w.flush(); err != nil {
			return err
		}
	}
	w.buf = append(w.buf, c)
	return nil
}

// ReadFrom writes a request body. net/http hands a body of known length
// over as an io.LimitedReader; when it reads a bytes.Reader to its end,
// its bytes go out with the head in one writev. Any other body follows the
// head, each piece sent as it is read, through a pooled buffer.
func (w *requestWriter) ReadFrom(r io.Reader) (int64, error) {
	lr, limited := r.(*io.LimitedReader)
	if limited && lr.N <= 0 {
		return 0, nil // no body
	}
	if limited {
		if br, ok := lr.R.(*bytes.Reader); ok && int64(br.Len()) <= lr.N {
			n, _ := br.WriteTo(&w.body) // hands over the bytes it holds, uncopied
			lr.N -= n
			err := w.writeWith(w.body)
			w.body = nil
			return n, err
		}
	}
	if err := w.flush(); err != nil {
		return 0, err
	}
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{w.conn}, r, *buf)
}

// writeWith sends what is collected followed by body.
func (w *requestWriter) writeWith(body []byte) error {
	if len(w.buf)+len(body) <= requestWriterSize {
		w.buf = append(w.buf, body...)
		return nil
	}
	w.vec[0], w.vec[1] = w.buf, body
	w.bufs = w.vec[:]
	_, err := w.bufs.WriteTo(w.conn)
	w.vec[1] = nil // not kept past the call
	w.buf = w.buf[:0]
	return err
}

// flush sends what is collected.
func (w *requestWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.conn.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

// heldSlice takes the one Write of a bytes.Reader's WriteTo: the slice
// itself, not a copy.
type heldSlice []byte

func (h *heldSlice) Write(p []byte) (int, error) {
	*h = p
	return len(p), nil
}

// copyBuffers are the buffers of bodies that are not a bytes.Reader.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}
