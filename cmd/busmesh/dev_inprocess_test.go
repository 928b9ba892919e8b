//go:build !nodev

package main

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestDevKafkaRetention checks that busmesh dev's in-process Kafka cluster
// drops old records: it keeps them all in memory, so without retention a
// dev mesh under load grows without bound.
func TestDevKafkaRetention(t *testing.T) {
	url, _, stop, err := inProcessBroker("kafka")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(strings.TrimPrefix(url, "kafka://"), ",")...),
		kgo.DefaultProduceTopic("retained"), kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.NoCompression())) // the bytes counted are the bytes sent
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	// kfake applies retention only while some topic sets its own, as every
	// topic busmesh creates does (retention.ms).
	hour := "3600000"
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.ms": &hour}, "retained"); err != nil {
		t.Fatal(err)
	}

	const size, n = 64 << 10, 512 // 32 MiB, twice what a partition keeps
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	value := make([]byte, size)
	for range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Retention runs every 5s and may first run while the records are
	// still being produced: wait for a run after the last.
	var kept int64
	for {
		starts, err := adm.ListStartOffsets(ctx, "retained")
		if err != nil {
			t.Fatal(err)
		}
		start, _ := starts.Lookup("retained", 0)
		if start.Err != nil {
			t.Fatal(start.Err)
		}
		// What is kept: 16 MiB, give or take a record.
		if kept = int64(n) - start.Offset; kept*size <= 17<<20 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d records of %d bytes kept of %d, want at most 16 MiB", kept, size, n)
		case <-time.After(250 * time.Millisecond):
		}
	}
	// kfake holds records in memory and frees them by whole segments: at
	// Kafka's 100 MiB ones, all 32 MiB would still be held.
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d MiB kept, heap grown by %d MiB", kept*size>>20, grown>>20)
	if grown > 24<<20 {
		t.Errorf("heap grown by %d MiB with 16 MiB kept: dropped records still held", grown>>20)
	}
}
