// Package coalesce makes the writes many goroutines make to one
// connection go out in few system calls, without delaying a lone one.
package coalesce

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// Conn is a connection whose writes, made by many goroutines at once, go
// out in as few system calls as it can.
//
// A broker client's flusher writes its buffer as soon as a publish kicks
// it, and the Go scheduler runs a goroutine just readied before the
// others: under concurrent calls each envelope took its own write(2),
// about a tenth of a sidecar's CPU. Here a write only appends to a buffer;
// one writer goroutine yields once (runtime.Gosched) before each system
// call, so the goroutines ready at that moment — callers with a request in
// hand, answers being decoded — add theirs first. An idle connection is
// not delayed: with nothing else ready, the yield returns at once.
//
// A write error closes the connection, so its reader fails and the client
// reconnects at once, and it is returned by the next Write (as a kernel
// buffer accepts bytes a dead peer never reads). Close sends what is
// buffered first. A write deadline bounds the writer's system calls (a
// deadline in the past, as tls.Conn.Close sets, still lets Close send what
// is buffered, within closeFlushWait).
//
// The writer runs only while there is something to send: an idle Conn
// owns no goroutine, so one its client drops without closing it (nats.go
// does, when a reconnect fails its handshake) is collected, and its socket
// closed, like a plain one.
type Conn struct {
	net.Conn

	mu       sync.Mutex
	room     sync.Cond // signalled when a batch is sent and when the writer stops
	pending  []byte    // written by Write, not yet sent
	spare    []byte    // a sent buffer, kept for the next batch; never pending's
	err      error     // the first write error: the connection is broken
	writing  bool      // a writer goroutine runs
	closing  bool
	deadline time.Time // for the writer's system calls (SetWriteDeadline)
	dirty    bool      // deadline is not yet the connection's
}

// maxPending is how much a Conn buffers before Write waits for the
// writer: a slow peer holds back the writers, not the memory.
const maxPending = 1 << 20

// maxSpare is the largest buffer kept for the next batch: one burst of
// large messages does not hold its memory for the connection's life.
const maxSpare = 64 << 10

// closeFlushWait bounds how long Close waits to send what is buffered.
const closeFlushWait = time.Second

// Wrap returns c with its writes coalesced. The Conn owns c from then on.
func Wrap(c net.Conn) *Conn {
	cc := &Conn{Conn: c}
	cc.room.L = &cc.mu
	return cc
}

// Write appends p to the buffer the writer sends, starting the writer if
// none runs; it waits only while the buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closing && len(c.pending) >= maxPending {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		return 0, c.err
	case c.closing:
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	return len(p), nil
}

// writeLoop sends the buffer until it is empty or the connection breaks.
func (c *Conn) writeLoop() {
	for {
		runtime.Gosched() // let the goroutines ready now add theirs first
		c.mu.Lock()
		if len(c.pending) == 0 || c.err != nil {
			c.writing = false
			c.room.Broadcast()
			c.mu.Unlock()
			return
		}
		buf := c.pending
		c.pending, c.spare = c.spare[:0], nil
		var err error
		if c.dirty {
			err = c.Conn.SetWriteDeadline(c.deadline)
			c.dirty = false
		}
		c.mu.Unlock()
		if err == nil {
			_, err = c.Conn.Write(buf)
		}
		c.mu.Lock()
		if cap(buf) <= maxSpare {
			c.spare = buf[:0]
		}
		if err != nil && c.err == nil {
			c.err = err
			_ = c.Conn.Close() // the reader fails too: the client reconnects now
		}
		c.room.Broadcast()
		c.mu.Unlock()
	}
}

// SetWriteDeadline bounds the writer's system calls from now on; Write
// itself only appends, so it never blocks on the peer. A deadline already
// past asks a caller not to block (tls.Conn.Close sets one before its
// close_notify): the writer still gets closeFlushWait to send what is
// buffered.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if now := time.Now(); !t.IsZero() && !t.After(now) {
		t = now.Add(closeFlushWait)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline, c.dirty = t, true
	return nil
}

// SetDeadline sets the read deadline of the connection and the writer's.
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)   // never fails
	return c.SetReadDeadline(t) // the connection's own
}

// Close sends what is buffered (waiting at most closeFlushWait, and not
// at all on a broken connection), then closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closing = true
	// The running writer may be in a system call under an older deadline:
	// bound it by the close's.
	c.deadline, c.dirty = time.Now().Add(closeFlushWait), false
	_ = c.Conn.SetWriteDeadline(c.deadline)
	c.room.Broadcast() // writers waiting for room: the connection closes
	for c.writing && c.err == nil {
		c.room.Wait()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// Dialer dials connections whose writes are coalesced.
type Dialer struct{ net.Dialer }

// Dial connects to address on network (as net.Dialer.Dial) and wraps the
// connection.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.Dialer.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
