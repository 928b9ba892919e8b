package rabbitmq_test

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkRequestReply measures a 128 B round trip as the mesh makes it:
// the caller publishes to a service subject read by a queue group, the
// service publishes the message back to the caller's inbox (fan-out), and
// the caller's inbox handler hands it to the waiting call. Caller and
// service have a connection each, as two sidecars do.
func BenchmarkRequestReply(b *testing.B) {
	addr := testAddr(b)
	url := "amqp://guest:guest@" + addr + "/"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc, caller := dial(b, url), dial(b, url)
	defer caller.Close()
	defer svc.Close()
	service, inbox := uniqueSubject("bench.svc"), uniqueSubject("bench.inbox")

	if _, err := svc.QueueSubscribe(ctx, service, "svc", func(ctx context.Context, req []byte) {
		if err := svc.Publish(ctx, inbox, req); err != nil && ctx.Err() == nil {
			b.Errorf("reply: %v", err)
		}
	}); err != nil {
		b.Fatal(err)
	}
	// Each call waits on a channel of its own, found by the id in the
	// first 8 bytes.
	var mu sync.Mutex
	waiting := map[uint64]chan struct{}{}
	if _, err := caller.Subscribe(ctx, inbox, func(_ context.Context, reply []byte) {
		mu.Lock()
		ch := waiting[binary.LittleEndian.Uint64(reply)]
		mu.Unlock()
		if ch != nil {
			ch <- struct{}{}
		}
	}); err != nil {
		b.Fatal(err)
	}
	var ids atomic.Uint64
	call := func(b *testing.B) func() {
		id := ids.Add(1)
		done := make(chan struct{}, 1)
		mu.Lock()
		waiting[id] = done
		mu.Unlock()
		req := make([]byte, 128)
		binary.LittleEndian.PutUint64(req, id)
		timer := time.NewTimer(time.Hour)
		return func() {
			if err := caller.Publish(ctx, service, req); err != nil {
				b.Fatal(err)
			}
			timer.Reset(5 * time.Second)
			select {
			case <-done:
			case <-timer.C:
				b.Fatal("no reply within 5s")
			}
		}
	}

	b.Run("serial", func(b *testing.B) {
		do := call(b)
		b.ReportAllocs()
		b.SetBytes(128)
		for b.Loop() {
			do()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(128)
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			do := call(b)
			for pb.Next() {
				do()
			}
		})
	})
}
