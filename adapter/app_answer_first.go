package adapter

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// answerFirst wraps the dialer of net/http's Transport, which carries the
// calls whose request body streams, so that an application's early answer
// reaches the caller. An application may answer before it has read the
// whole request (413 for an upload over its limit, 401) and close; the
// unread request makes its close a reset. The Transport fails the call if
// its write of the request fails before its read of the answer returns,
// although the answer is in hand: the two race, and a large upload lost
// the race about two times in three. On an answerFirstConn a write that
// meets the reset waits instead, until the connection is closed: the
// answer wins, and the write then fails, so the Transport never keeps the
// connection (it gives a write that has not ended 50 ms after the answer's
// end, then closes). The rest of the request is not read from the caller
// meanwhile. A reset with no answer still fails the call, by its read.
func answerFirst(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &answerFirstConn{Conn: nc, closed: make(chan struct{})}, nil
	}
}

// answerFirstConn is a connection to the application whose writes, once
// the application reset it, wait for it to be closed.
type answerFirstConn struct {
	net.Conn
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *answerFirstConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		<-c.closed // the read of the answer goes first
	}
	return n, err
}

// ReadFrom copies a body of known length through a pooled 32 KiB buffer
// (net/http hands such a body to the connection's ReadFrom, whose copy
// allocates a buffer per call), on Write above.
func (c *answerFirstConn) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{c}, r, *buf)
}

func (c *answerFirstConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
