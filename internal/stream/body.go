package stream

import (
	"io"
	"net/http"
)

// Sizes of the data path, the same in both sidecars.
const (
	// DefaultWindow is the credit, in bytes, a receiver grants a stream.
	DefaultWindow = 1 << 20
	// MaxChunk bounds a body frame, so that one large body does not hold the
	// broker connection long ahead of small calls.
	MaxChunk = 256 << 10
	// MaxInline is the largest body sent inside the request or response
	// message itself; a larger one is streamed in frames.
	MaxInline = 1 << 20
	// Slack covers a frame's fields other than its data when sizing chunks
	// under the broker's message limit.
	Slack = 256
)

// ChunkSize returns the body frame size for a broker message limit.
func ChunkSize(maxMessage int) int { return min(MaxChunk, maxMessage-Slack) }

// ReadFirst reads the part of a body that goes in a call's first message:
// all of it if it fits in max bytes, else max bytes and more=true.
// contentLength is the declared length, -1 if unknown. The data is read
// into buf, which grows as data arrives (never to more than the body
// needs), and is left in *buf for the caller to pool.
func ReadFirst(body io.Reader, buf *[]byte, max int, contentLength int64) (data []byte, more bool, err error) {
	if contentLength == 0 || body == nil || body == http.NoBody {
		return nil, false, nil
	}
	if contentLength > 0 {
		want := int(min(contentLength, int64(max)))
		if cap(*buf) < want {
			*buf = make([]byte, want)
		}
		b := (*buf)[:want]
		n, err := io.ReadFull(body, b)
		switch err {
		case nil:
			return b, contentLength > int64(n), nil
		case io.EOF, io.ErrUnexpectedEOF:
			return nil, false, io.ErrUnexpectedEOF // shorter than declared
		}
		return nil, false, err
	}
	// Unknown length: grow by doubling as the body comes, so a small
	// chunked body costs a small buffer.
	b := (*buf)[:cap(*buf)]
	if len(b) == 0 {
		b = make([]byte, 4<<10)
	}
	n := 0
	for n < max {
		if n == len(b) {
			b = grow(b, max)
		}
		m, err := body.Read(b[n:min(len(b), max)])
		n += m
		if err == io.EOF {
			*buf = b[:0]
			return b[:n], false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	*buf = b[:0]
	return b[:n], true, nil
}

// grow returns a buffer twice b's length (at most max) holding b's data:
// a body of unknown length costs a buffer the size of what came.
func grow(b []byte, max int) []byte {
	nb := make([]byte, min(max, 2*len(b)))
	copy(nb, b)
	return nb
}
