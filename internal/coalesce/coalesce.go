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
// about a tenth of a sidecar's CPU. Here a write only copies into a buffer;
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
// One writer goroutine per connection waits for work (the design the
// benchmark figures were measured with; one started per batch costs a
// goroutine start per batch, and looked no faster). It holds only the
// connection's state, not the Conn: a Conn its client drops without
// closing it (nats.go does, when a reconnect fails its handshake) is
// collected, and a cleanup then stops the writer and closes the socket,
// as os.File's does.
type Conn struct {
	net.Conn
	l *link
}

// link is a Conn's state, shared with its writer goroutine.
type link struct {
	conn net.Conn

	mu       sync.Mutex
	room     sync.Cond // signalled when a batch is sent and when the writer idles
	pending  [][]byte  // chunks written by Write, not yet sent: all full but the last
	spare    [][]byte  // a sent batch's list, emptied, for the next; never pending's
	err      error     // the first write error: the connection is broken
	sending  bool      // the writer has taken a batch and not yet found the buffer empty
	closing  bool
	deadline time.Time // for the writer's system calls (SetWriteDeadline)
	dirty    bool      // deadline is not yet the connection's

	vec net.Buffers // the writer's own: the batch being sent

	kick     chan struct{} // there is something to send (capacity 1)
	stop     chan struct{} // closed when the writer is to end
	stopOnce sync.Once
}

// maxPending is how much a Conn buffers before Write waits for the
// writer: a slow peer holds back the writers, not the memory.
const maxPending = 1 << 20

// chunkSize is the size of the buffers writes are copied into. A batch
// goes out as its list of chunks in one writev(2): a burst of large
// messages is copied once, never again to grow one buffer (which cost a
// sixth of a sidecar's CPU at 16 KiB bodies), and the chunks, shared by
// every Conn through chunkPool, go back when sent.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// putChunk returns a sent chunk to chunkPool.
func putChunk(b []byte) { chunkPool.Put((*[chunkSize]byte)(b[:chunkSize])) }

// closeFlushWait bounds how long Close waits to send what is buffered.
const closeFlushWait = time.Second

// Wrap returns c with its writes coalesced. The Conn owns c from then on.
func Wrap(c net.Conn) *Conn {
	l := &link{conn: c, kick: make(chan struct{}, 1), stop: make(chan struct{})}
	l.room.L = &l.mu
	go l.writeLoop()
	cc := &Conn{Conn: c, l: l}
	runtime.AddCleanup(cc, (*link).abandon, l)
	return cc
}

// Write appends p to the buffer the writer sends; it waits only while the
// buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	l := c.l
	l.mu.Lock()
	for l.err == nil && !l.closing && l.buffered() >= maxPending {
		l.room.Wait()
	}
	switch {
	case l.err != nil:
		err := l.err
		l.mu.Unlock()
		return 0, err
	case l.closing:
		l.mu.Unlock()
		return 0, net.ErrClosed
	}
	n := len(p)
	for len(p) > 0 {
		last := len(l.pending) - 1
		if last < 0 || len(l.pending[last]) == chunkSize {
			l.pending = append(l.pending, chunkPool.Get().(*[chunkSize]byte)[:0])
			last++
		}
		b := l.pending[last]
		k := copy(b[len(b):chunkSize], p)
		l.pending[last], p = b[:len(b)+k], p[k:]
	}
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default: // the writer has been told already
	}
	return n, nil
}

// buffered returns the bytes in pending (l.mu held).
func (l *link) buffered() int {
	n := len(l.pending)
	if n == 0 {
		return 0
	}
	return (n-1)*chunkSize + len(l.pending[n-1])
}

// writeLoop sends batches while there is something to send, until the
// connection closes, breaks or is dropped.
func (l *link) writeLoop() {
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			return
		}
		for l.sendBatch() {
		}
	}
}

// sendBatch sends what is buffered after one yield; false when there was
// nothing to send or the connection broke.
func (l *link) sendBatch() bool {
	runtime.Gosched() // let the goroutines ready now add theirs first
	l.mu.Lock()
	if len(l.pending) == 0 || l.err != nil {
		l.sending = false
		l.room.Broadcast()
		l.mu.Unlock()
		return false
	}
	batch := l.pending
	l.pending, l.spare = l.spare[:0], nil
	l.sending = true
	var err error
	if l.dirty {
		err = l.conn.SetWriteDeadline(l.deadline)
		l.dirty = false
	}
	l.mu.Unlock()
	if err == nil {
		// WriteTo consumes the list it is called on: a field's, so that
		// it does not escape to the heap, and base keeps its array.
		l.vec = append(l.vec[:0], batch...)
		base := l.vec[:0]
		_, err = l.vec.WriteTo(l.conn)
		clear(base[:len(batch)]) // what a failed write left holds no chunk
		l.vec = base
	}
	for _, b := range batch {
		putChunk(b)
	}
	clear(batch)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.spare = batch[:0]
	if err != nil && l.err == nil {
		l.err = err
		_ = l.conn.Close() // the reader fails too: the client reconnects now
	}
	l.room.Broadcast()
	return err == nil
}

// abandon ends the writer and closes the socket of a Conn collected
// without Close.
func (l *link) abandon() {
	l.stopOnce.Do(func() { close(l.stop) })
	_ = l.conn.Close()
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
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.l.deadline, c.l.dirty = t, true
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
	l := c.l
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.closing = true
	// The writer may be in a system call under an older deadline: bound
	// it by the close's.
	l.deadline, l.dirty = time.Now().Add(closeFlushWait), false
	_ = l.conn.SetWriteDeadline(l.deadline)
	l.room.Broadcast() // writers waiting for room: the connection closes
	for (l.sending || len(l.pending) > 0) && l.err == nil {
		l.room.Wait()
	}
	l.mu.Unlock()
	l.stopOnce.Do(func() { close(l.stop) })
	return l.conn.Close()
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
