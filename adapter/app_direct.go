package adapter

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// directTransport is the HTTP/1.1 client of a plain-HTTP application for
// calls whose request body is in hand: the worker writes the request and
// reads the answer on a kept connection itself. net/http's Transport hands
// every call to two goroutines of its connection (a write loop and a read
// loop), two wake-ups per call on the request path; here there are none.
// The wire format is still net/http's own (Request.Write, ReadResponse).
// Anything else — a request body still arriving, TLS, an upgrade — goes
// to the Transport.
type directTransport struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback *http.Transport
	maxIdle  int

	mu   sync.Mutex
	idle []*directConn // the most recently used last
}

// directConn is one kept connection to the application.
type directConn struct {
	net.Conn
	raw       syscall.RawConn
	br        *bufio.Reader
	w         *requestWriter
	idleSince time.Time
	interrupt func() // fails the reads and writes in progress; made once, not per call
}

// earlyAnswerWait is how long an answer is awaited after the application
// stopped taking the request.
const earlyAnswerWait = time.Second

// maxInformational bounds the 1xx answers (100 included) before a call's
// answer, so an application cannot hold a call with an endless stream of
// them.
const maxInformational = 5

// directIdleTimeout is how long a connection may stay idle and still be
// used, as the Transport's IdleConnTimeout.
const directIdleTimeout = 90 * time.Second

func newDirectTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error), fallback *http.Transport, maxIdle int) *directTransport {
	return &directTransport{dial: dial, fallback: fallback, maxIdle: maxIdle}
}

// RoundTrip makes one call.
func (t *directTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	if req.URL.Scheme != "http" || req.Method == http.MethodConnect || req.Header.Get("Upgrade") != "" ||
		hasBody && (req.GetBody == nil || req.ContentLength < 0) {
		return t.fallback.RoundTrip(req)
	}
	for attempt := 0; ; attempt++ {
		c, reused, err := t.conn(req.Context(), req.URL.Host)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, answered, err := t.exchange(c, req)
		if err == nil {
			return resp, nil
		}
		c.Close()
		// A kept connection the application closed as the call went out:
		// the Transport's rule, again on a new one if nothing was answered
		// and the request may be sent twice.
		if !reused || answered || attempt > 0 || !idempotent(req) || req.Context().Err() != nil {
			closeBody(req)
			return nil, err
		}
		if req.GetBody != nil { // a copy: the caller's request is not changed
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// exchange writes req on c and reads the head of its answer, skipping
// informational answers. answered tells that some of the answer came.
func (t *directTransport) exchange(c *directConn, req *http.Request) (_ *http.Response, answered bool, _ error) {
	// A cancelled call interrupts the connection's reads and writes; the
	// connection is then not kept.
	stop := context.AfterFunc(req.Context(), c.interrupt)
	err := req.Write(c.w)
	if err == nil {
		err = c.w.flush()
	}
	if err != nil {
		// An application may answer (401, 413) and close before it has
		// read the whole request: its answer, if it sent one, is the call's.
		_ = c.SetReadDeadline(time.Now().Add(earlyAnswerWait)) // a closed connection fails the read below
		if req.Context().Err() != nil {
			c.interrupt() // the deadline above must not undo a cancel that came first
		}
		if resp, rerr := http.ReadResponse(c.br, req); rerr == nil && resp.StatusCode >= 200 {
			resp.Body = &directBody{ReadCloser: resp.Body, t: t, c: c, stop: stop, ctx: req.Context()}
			return resp, true, nil
		}
		stop()
		return nil, false, contextErr(req.Context(), err)
	}
	informational := 0
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			stop()
			return nil, c.br.Buffered() > 0, contextErr(req.Context(), err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if informational++; informational > maxInformational {
				stop()
				return nil, true, errors.New("too many informational (1xx) answers")
			}
			continue // 100 Continue, 103 Early Hints: the answer follows
		}
		// After 101 the connection speaks another protocol: never kept.
		keep := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
		if resp.Body == http.NoBody { // the answer is whole already
			(&directBody{t: t, c: c, stop: stop, keep: keep}).release(true)
			return resp, true, nil
		}
		resp.Body = &directBody{ReadCloser: resp.Body, t: t, c: c, stop: stop, keep: keep, ctx: req.Context()}
		return resp, true, nil
	}
}

// contextErr reports a cancelled call as its context's error, as the
// Transport does, rather than as the deadline that interrupted it.
func contextErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// conn takes a kept connection that is still open, or dials one.
func (t *directTransport) conn(ctx context.Context, addr string) (*directConn, bool, error) {
	now := time.Now()
	for {
		t.mu.Lock()
		if len(t.idle) == 0 {
			t.mu.Unlock()
			break
		}
		c := t.idle[len(t.idle)-1]
		t.idle[len(t.idle)-1] = nil
		t.idle = t.idle[:len(t.idle)-1]
		t.mu.Unlock()
		if now.Sub(c.idleSince) < directIdleTimeout && c.open() {
			return c, true, nil
		}
		c.Close()
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &directConn{Conn: nc, br: bufio.NewReaderSize(nc, 4096), w: newRequestWriter(nc)}
	c.interrupt = func() { _ = nc.SetDeadline(time.Unix(1, 0)) }
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	return c, false, nil
}

// open tells whether the application has not closed a kept connection
// (nor sent on it unasked), with one non-blocking peek: what the
// Transport's read loop learns by always reading.
func (c *directConn) open() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true
	}
	alive := false
	var b [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && alive
}

// put keeps c for the next call.
func (t *directTransport) put(c *directConn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if len(t.idle) > 0 && c.idleSince.Sub(t.idle[0].idleSince) > directIdleTimeout {
		// The least recently used is never taken while others are:
		// closed here once it is too old to use.
		old := t.idle[0]
		t.idle = append(t.idle[:0], t.idle[1:]...)
		defer old.Close()
	}
	if len(t.idle) < t.maxIdle {
		t.idle = append(t.idle, c)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	c.Close()
}

// CloseIdleConnections closes the kept connections, and the Transport's.
func (t *directTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	t.fallback.CloseIdleConnections()
}

// directBody is an answer's body: read to its end on a connection that
// stays open, the connection is kept; closed before, it is closed. The
// connection is released once, whichever of a read's end and Close (which
// may come from another goroutine, during a read) comes first.
type directBody struct {
	io.ReadCloser
	t        *directTransport
	c        *directConn
	ctx      context.Context
	stop     func() bool
	keep     bool
	released atomic.Bool
}

func (b *directBody) Read(p []byte) (int, error) {
	if b.released.Load() {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release(true)
	} else if err != nil {
		err = contextErr(b.ctx, err)
		b.release(false)
	}
	return n, err
}

// inHand reports whether the body's first n bytes can be read without
// waiting: read already with the head, or in the socket's receive queue.
func (b *directBody) inHand(n int64) bool {
	have := int64(b.c.br.Buffered())
	if have >= n {
		return true
	}
	queued, ok := b.c.queued()
	return ok && have+int64(queued) >= n
}

// Close before the end closes the connection, which also ends a read in
// progress.
func (b *directBody) Close() error {
	b.release(false)
	return nil
}

// release ends the call on the connection: kept when the whole answer was
// read, nothing cancelled it and neither side asked to close.
func (b *directBody) release(whole bool) {
	if !b.released.CompareAndSwap(false, true) {
		return
	}
	if b.stop() && whole && b.keep {
		b.t.put(b.c)
		return
	}
	b.c.Close()
}

// idempotent tells whether a request may be sent twice, by the
// Transport's rule: a safe method, or an idempotency key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// closeBody closes a request's body the call did not send.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

var _ http.RoundTripper = (*directTransport)(nil)
