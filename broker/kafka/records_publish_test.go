package kafka_test

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// TestPublishReusedBuffers publishes from buffers the callers overwrite as
// soon as Publish returns, at sizes across the backend's record pools
// (and past them), from several goroutines: each message must arrive once,
// whole and as published, although its copy and record are recycled as
// soon as franz-go is done with them.
func TestPublishReusedBuffers(t *testing.T) {
	c := startCluster(t)
	pub, sub := dial(t, c.url), dial(t, c.url)
	t.Cleanup(func() { pub.Close(); sub.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	subject := broker.NewSubjects("reuse").Inbox("reader")

	sizes := []int{8, 100, 513, 1500, 16 << 10, 16<<10 + 300, 48<<10 + 1, 64 << 10, 70 << 10}
	const writers, each = 4, 150
	fill := func(id uint64) byte { return byte(id*31 + 7) }
	var mu sync.Mutex
	seen := map[uint64]int{}
	var bad []string
	if _, err := sub.Subscribe(ctx, subject, func(_ context.Context, d []byte) {
		mu.Lock()
		defer mu.Unlock()
		if len(d) < 8 {
			bad = append(bad, "short message")
			return
		}
		id := binary.LittleEndian.Uint64(d)
		if want := sizes[id%uint64(len(sizes))]; len(d) != want {
			bad = append(bad, "wrong size")
		}
		for _, b := range d[8:] {
			if b != fill(id) {
				bad = append(bad, "overwritten body")
				break
			}
		}
		seen[id]++
	}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			buf := make([]byte, 70<<10)
			for i := range each {
				id := uint64(w*each + i)
				msg := buf[:sizes[id%uint64(len(sizes))]]
				binary.LittleEndian.PutUint64(msg, id)
				for j := 8; j < len(msg); j++ {
					msg[j] = fill(id)
				}
				if err := pub.Publish(ctx, subject, msg); err != nil {
					t.Error(err)
					return
				}
				for j := range msg {
					msg[j] = 0xff // the caller's buffer is its own again
				}
			}
		})
	}
	wg.Wait()

	for {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n == writers*each || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // late duplicates would show now
	mu.Lock()
	defer mu.Unlock()
	var dup int
	for _, k := range seen {
		if k > 1 {
			dup++
		}
	}
	if len(seen) != writers*each || dup > 0 || len(bad) > 0 {
		t.Fatalf("%d of %d messages arrived, %d more than once, %d damaged (%v)", len(seen), writers*each, dup, len(bad), bad[:min(len(bad), 5)])
	}
}
