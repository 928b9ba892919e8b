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
// A write error is returned by the next Write (as a kernel buffer accepts
// bytes a dead peer never reads), and Close sends what is buffered first.
type Conn struct {
	net.Conn

	mu      sync.Mutex
	room    sync.Cond // signalled when the buffer is written
	pending []byte    // written by Write, not yet sent
	spare   []byte    // the buffer last sent, reused
	err     error     // the first write error: the connection is broken
	closing bool

	kick chan struct{} // the writer has work (capacity 1)
	done chan struct{} // the writer has ended
}

// maxPending is how much a Conn buffers before Write waits for
// the writer: a slow peer holds back the writers, not the memory.
const maxPending = 1 << 20

// maxSpare is the largest buffer kept for the next batch: one burst of
// large messages does not hold its memory for the connection's life.
const maxSpare = 64 << 10

// closeFlushWait bounds how long Close waits to send what is buffered.
const closeFlushWait = time.Second

// Wrap returns c with its writes coalesced. The Conn owns c from then on.
func Wrap(c net.Conn) *Conn {
	cc := &Conn{Conn: c, kick: make(chan struct{}, 1), done: make(chan struct{})}
	cc.room.L = &cc.mu
	go cc.writeLoop()
	return cc
}

// Write appends p to the buffer the writer sends; it waits only while the
// buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && !c.closing && len(c.pending) >= maxPending {
		c.room.Wait()
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closing:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default: // the writer has been told already
	}
	return len(p), nil
}

// writeLoop sends the buffer whenever there is something in it, until the
// connection closes or breaks.
func (c *Conn) writeLoop() {
	defer close(c.done)
	for range c.kick {
		runtime.Gosched() // let the goroutines ready now add theirs first
		c.mu.Lock()
		buf, closing := c.pending, c.closing
		c.pending = c.spare[:0]
		c.mu.Unlock()
		var err error
		if len(buf) > 0 {
			_, err = c.Conn.Write(buf)
		}
		c.mu.Lock()
		if cap(buf) <= maxSpare {
			c.spare = buf[:0]
		}
		if err != nil && c.err == nil {
			c.err = err
		}
		c.room.Broadcast()
		c.mu.Unlock()
		if err != nil || closing {
			return
		}
	}
}

// Close sends what is buffered (waiting at most closeFlushWait), then
// closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closing = true
	c.room.Broadcast()
	c.mu.Unlock()
	_ = c.SetWriteDeadline(time.Now().Add(closeFlushWait)) // the connection's own (Conn does not override it)
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case <-c.done:
	case <-time.After(closeFlushWait):
	}
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
