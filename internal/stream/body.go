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
// into buf, grown if needed.
func ReadFirst(body io.Reader, buf *[]byte, max int, contentLength int64) (data []byte, more bool, err error) {
	if contentLength == 0 || body == nil || body == http.NoBody {
		return nil, false, nil
	}
	want := max
	if contentLength > 0 && contentLength < int64(max) {
		want = int(contentLength)
	}
	if cap(*buf) < want {
		*buf = make([]byte, want)
	}
	b := (*buf)[:want]
	n, err := io.ReadFull(body, b)
	switch err {
	case nil:
		// A full buffer: more follows unless the length said this was all.
		return b, contentLength < 0 || contentLength > int64(n), nil
	case io.EOF, io.ErrUnexpectedEOF:
		if contentLength > 0 && int64(n) < contentLength {
			return nil, false, io.ErrUnexpectedEOF
		}
		return b[:n], false, nil
	}
	return nil, false, err
}
