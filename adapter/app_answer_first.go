package adapter

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
)

// answerFirst wraps the dialer of net/http's Transport, which carries the
// calls whose request body streams, so that an application's early answer
// reaches the caller. An application may answer before it has read the
// whole request (413 for an upload over its limit, 401) and close; the
// unread request makes its close a reset. The Transport then fails the
// call if its write of the request fails before its read of the answer
// returns, although the answer is in hand: the two race, and a large
// upload lost the race about two times in three. On an answerFirstConn the
// rest of such a request is dropped instead, so the answer wins; a reset
// with no answer still fails the call, by its read.
func answerFirst(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &answerFirstConn{Conn: nc}, nil
	}
}

// answerFirstConn is a connection to the application whose writes succeed,
// dropping their bytes, once the application reset it, until it is
// closed.
type answerFirstConn struct {
	net.Conn
	reset  atomic.Bool // the application reset the connection: drop writes
	closed atomic.Bool
}

func (c *answerFirstConn) Write(p []byte) (int, error) {
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	if c.reset.Load() {
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err != nil && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)) {
		c.reset.Store(true)
		return len(p), nil
	}
	return n, err
}

// ReadFrom copies a streamed body in 32 KiB writes: the Transport's
// bufio.Writer would otherwise write through its own 4 KiB buffer.
func (c *answerFirstConn) ReadFrom(r io.Reader) (int64, error) {
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	return io.CopyBuffer(struct{ io.Writer }{c}, r, *buf)
}

func (c *answerFirstConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}
