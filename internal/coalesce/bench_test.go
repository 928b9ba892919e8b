package coalesce_test

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/busmesh/busmesh/internal/coalesce"
)

// BenchmarkWrites: 200-byte writes from parallel goroutines, as a broker
// client's publishes under concurrent calls (serialised by the client's
// lock, here by a mutex), to a loopback TCP connection drained by a
// reader. "direct" makes a system call per write; "coalesced" shares
// them. Compare the two ns/op in one run.
func BenchmarkWrites(b *testing.B) {
	for _, bc := range []struct {
		name string
		wrap func(net.Conn) net.Conn
	}{
		{"direct", func(c net.Conn) net.Conn { return c }},
		{"coalesced", func(c net.Conn) net.Conn { return coalesce.Wrap(c) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			client, server := tcpPair(b)
			go io.Copy(io.Discard, server)
			c := bc.wrap(client)
			var mu sync.Mutex // a client's own lock around its writes
			msg := make([]byte, 200)
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
