package coalesce_test

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/busmesh/busmesh/internal/coalesce"
)

// BenchmarkWrites: 200-byte and 16 KiB writes from parallel goroutines,
// as a broker client's publishes under concurrent calls (serialised by the
// client's lock, here by a mutex), to a loopback TCP connection drained by
// a reader. "direct" makes a system call per write; "coalesced" shares
// them. Compare the ns/op and allocations of the two in one run.
func BenchmarkWrites(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
		wrap func(net.Conn) net.Conn
	}{
		{"direct/200B", 200, func(c net.Conn) net.Conn { return c }},
		{"coalesced/200B", 200, func(c net.Conn) net.Conn { return coalesce.Wrap(c) }},
		{"direct/16KiB", 16 << 10, func(c net.Conn) net.Conn { return c }},
		{"coalesced/16KiB", 16 << 10, func(c net.Conn) net.Conn { return coalesce.Wrap(c) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client, server := tcpPair(b)
			go io.Copy(io.Discard, server)
			c := bc.wrap(client)
			var mu sync.Mutex // a client's own lock around its writes
			msg := make([]byte, bc.size)
			b.SetBytes(int64(len(msg)))
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					_, err := c.Write(msg)
					mu.Unlock()
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRoundTrips: one write at a time, each answered by the peer
// before the next, as a lone call's request and reply: what coalescing
// must not slow down (compare with an earlier commit's figures).
func BenchmarkRoundTrips(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
	}{{"200B", 200}, {"16KiB", 16 << 10}} {
		b.Run(bc.name, func(b *testing.B) {
			client, server := tcpPair(b)
			go func() {
				buf := make([]byte, bc.size)
				for {
					if _, err := io.ReadFull(server, buf); err != nil {
						return
					}
					if _, err := server.Write(buf[:1]); err != nil {
						return
					}
				}
			}()
			c := coalesce.Wrap(client)
			msg := make([]byte, bc.size)
			one := make([]byte, 1)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, one); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
