package kafka_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/busmesh/busmesh/broker"
)

// BenchmarkRequestReply measures request/reply as the mesh does it on an
// in-process kfake cluster: a caller publishes to a service subject, a
// queue-group member (the adapter) publishes it back to the caller's inbox,
// and the caller's inbox subscription (fan-out, no group) matches it by id.
// callers=1 shows the latency of one round trip, callers=32 the throughput
// when many share the connections; bytes is the message's size.
func BenchmarkRequestReply(b *testing.B) {
	for _, callers := range []int{1, 32} {
		for _, size := range []int{128, 16 << 10} {
			b.Run(fmt.Sprintf("callers=%d/bytes=%d", callers, size), func(b *testing.B) { benchRequestReply(b, callers, size) })
		}
	}
}

func benchRequestReply(b *testing.B, callers, size int) {
	// No proxy in between: it would double the syscalls being measured.
	// 1 MiB segments: kfake grows a segment's in-memory file by doubling,
	// which at Kafka's 100 MiB would copy megabytes in this process.
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.BrokerConfigs(map[string]string{"log.segment.bytes": "1048576"}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(kc.Close)
	url := "kafka://" + kc.ListenAddrs()[0]
	client, server := dial(b, url), dial(b, url)
	b.Cleanup(func() { client.Close(); server.Close() })
	ctx := b.Context()
	subjects := broker.NewSubjects("bench")
	service, inbox := subjects.Service("bench"), subjects.Inbox("bench-caller")
	if _, err := server.QueueSubscribe(ctx, service, "bench", func(ctx context.Context, d []byte) {
		if err := server.Publish(ctx, inbox, d); err != nil {
			b.Error(err)
		}
	}); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	waiting := map[uint64]chan struct{}{}
	if _, err := client.Subscribe(ctx, inbox, func(_ context.Context, d []byte) {
		id := binary.LittleEndian.Uint64(d)
		mu.Lock()
		ch := waiting[id]
		delete(waiting, id)
		mu.Unlock()
		if ch != nil {
			close(ch)
		}
	}); err != nil {
		b.Fatal(err)
	}
	var next atomic.Uint64
	var lost atomic.Int64
	call := func(req []byte, timer *time.Timer) bool {
		id := next.Add(1)
		binary.LittleEndian.PutUint64(req, id)
		ch := make(chan struct{})
		mu.Lock()
		waiting[id] = ch
		mu.Unlock()
		if err := client.Publish(ctx, service, req); err != nil {
			b.Error(err)
			return false
		}
		timer.Reset(5 * time.Second)
		defer timer.Stop()
		select {
		case <-ch:
		case <-timer.C:
			lost.Add(1)
		}
		return true
	}
	b.ReportAllocs()
	b.ResetTimer()
	if callers == 1 {
		req, timer := make([]byte, size), time.NewTimer(time.Hour)
		for i := 0; i < b.N && call(req, timer); i++ {
		}
	} else {
		b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			req, timer := make([]byte, size), time.NewTimer(time.Hour)
			for pb.Next() && call(req, timer) {
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rt/s")
	if n := lost.Load(); n > 0 {
		b.Errorf("%d of %d replies did not arrive within 5s", n, b.N)
	}
}
