package coalesce_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/coalesce"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("no connection accepted")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// countingConn counts the writes that reach the connection under a Conn.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// Writers writing at once: every byte arrives, each writer's messages in
// its order, in far fewer writes to the connection than messages.
func TestConcurrentWritersShareWrites(t *testing.T) {
	client, server := tcpPair(t)
	inner := &countingConn{Conn: client}
	c := coalesce.Wrap(inner)
	const writers, each = 8, 2000
	// First a small batch (its buffer is kept for reuse), then one over the
	// size kept, each read before the next: the buffers that follow must
	// not share memory with a batch being sent.
	r := bufio.NewReader(server)
	for _, first := range [][]byte{[]byte("small"), bytes.Repeat([]byte{0xAB}, 100<<10)} {
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(first))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, first) {
			t.Fatalf("a write of %d bytes arrived altered (%v)", len(first), err)
		}
	}
	before := inner.writes.Load()
	got := make(chan error, 1)
	go func() {
		next := make([]uint32, writers)
		var msg [8]byte
		for range writers * each {
			if _, err := io.ReadFull(r, msg[:]); err != nil {
				got <- err
				return
			}
			w, seq := binary.BigEndian.Uint32(msg[:4]), binary.BigEndian.Uint32(msg[4:])
			if w >= writers || seq != next[w] {
				got <- errors.New("a message out of its writer's order")
				return
			}
			next[w]++
		}
		got <- nil
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var msg [8]byte
			for seq := range each {
				binary.BigEndian.PutUint32(msg[:4], uint32(w))
				binary.BigEndian.PutUint32(msg[4:], uint32(seq))
				if _, err := c.Write(msg[:]); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	n := inner.writes.Load() - before
	t.Logf("%d messages in %d writes", writers*each, n)
	if n > writers*each/2 {
		t.Errorf("%d messages took %d writes, want at most half as many", writers*each, n)
	}
}

// A lone write is sent without another write or a Close behind it.
func TestLoneWriteIsSent(t *testing.T) {
	client, server := tcpPair(t)
	c := coalesce.Wrap(client)
	writeAndRead(t, c, server, "ping")
}

// Close sends what is buffered, then closes.
func TestCloseSendsBuffered(t *testing.T) {
	client, server := tcpPair(t)
	c := coalesce.Wrap(client)
	want := bytes.Repeat([]byte("0123456789"), 50_000)
	for i := 0; i < len(want); i += 1000 {
		if _, err := c.Write(want[i : i+1000]); err != nil {
			t.Fatal(err)
		}
	}
	read := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		read <- b
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := <-read; !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(want))
	}
	if _, err := c.Write([]byte("late")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// A peer that is gone: a later Write reports the error.
func TestWriteErrorReported(t *testing.T) {
	client, server := tcpPair(t)
	c := coalesce.Wrap(client)
	server.(*net.TCPConn).SetLinger(0) // a reset, not a polite close
	server.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := c.Write(make([]byte, 1024)); err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("writes to a reset connection kept succeeding for 10s")
}

// A peer that does not read holds its writers back once a MiB is waiting:
// the buffer is bounded; reading lets them go on.
func TestSlowPeerHoldsWritersBack(t *testing.T) {
	client, server := net.Pipe() // no buffer: a write waits for its reader
	defer server.Close()
	c := coalesce.Wrap(client)
	defer c.Close()
	var written atomic.Int64
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		chunk := make([]byte, 64<<10)
		for range 64 { // 4 MiB
			if _, err := c.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}()
	time.Sleep(200 * time.Millisecond)
	if n := written.Load(); n > 2<<20 {
		t.Fatalf("%d bytes accepted with nothing read, want at most about 1 MiB buffered", n)
	}
	if _, err := io.CopyN(io.Discard, server, 4<<20); err != nil {
		t.Fatal(err)
	}
	<-finished
	if n := written.Load(); n != 4<<20 {
		t.Fatalf("%d bytes written, want 4 MiB", n)
	}
}

// A deadline the connection had when wrapped is lifted by the wrapper's
// SetDeadline (amqp091-go bounds its handshake so, then clears it): writes
// after the old deadline go out.
func TestDeadlineClearedThroughWrapper(t *testing.T) {
	client, server := tcpPair(t)
	client.SetDeadline(time.Now().Add(100 * time.Millisecond))
	c := coalesce.Wrap(client)
	c.SetDeadline(time.Time{})
	time.Sleep(200 * time.Millisecond)
	writeAndRead(t, c, server, "late")
}

// writeAndRead writes msg through c and reads it at the other end, within
// 5 s.
func writeAndRead(t *testing.T, c net.Conn, server net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != msg {
		t.Fatalf("read %q, %v; want %q", buf, err, msg)
	}
}

// A Conn dropped without Close (nats.go drops one whose reconnect
// handshake failed) is collected: its writer ends and its socket closes.
func TestDroppedConnIsClosed(t *testing.T) {
	client, server := tcpPair(t)
	func() {
		c := coalesce.Wrap(client)
		writeAndRead(t, c, server, "once")
	}()
	before := runtime.NumGoroutine()
	server.SetReadDeadline(time.Now().Add(10 * time.Second))
	closed := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		closed <- err
	}()
	for {
		runtime.GC()
		select {
		case err := <-closed:
			if !errors.Is(err, io.EOF) {
				t.Fatalf("the dropped connection's peer read %v, want EOF", err)
			}
			// The writer has ended too (the reader above has as well).
			for range 100 {
				if runtime.NumGoroutine() < before {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatalf("goroutines %d after the drop, want fewer than %d", runtime.NumGoroutine(), before)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Writes of every size, from a byte to several chunks, arrive whole and
// in order through the batches' writev; the 1 MiB write fills the buffer,
// so batches span many chunks.
func TestWritesAcrossChunksArriveInOrder(t *testing.T) {
	client, server := tcpPair(t)
	c := coalesce.Wrap(client)
	defer c.Close()
	sizes := []int{1, 200, 65535, 65536, 65537, 16 << 10, 3, 200 << 10, 7, 1 << 20, 64 << 10, 5}
	var want []byte
	for i, n := range sizes {
		for j := range n {
			want = append(want, byte(i*31+j))
		}
	}
	done := make(chan []byte)
	go func() {
		got := make([]byte, len(want))
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.ReadFull(server, got)
		done <- got[:n]
	}()
	off := 0
	for _, n := range sizes {
		if wrote, err := c.Write(want[off : off+n]); wrote != n || err != nil {
			t.Fatalf("Write of %d bytes = %d, %v", n, wrote, err)
		}
		off += n
	}
	got := <-done
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("the stream differs from what was written at byte %d of %d (%d read)", i, len(want), len(got))
	}
}
