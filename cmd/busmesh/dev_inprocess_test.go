//go:build !nodev

package main

import (
	"context"
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
	value := make([]byte, size)
	for range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for {
		starts, err := adm.ListStartOffsets(ctx, "retained")
		if err != nil {
			t.Fatal(err)
		}
		start, _ := starts.Lookup("retained", 0)
		if start.Err != nil {
			t.Fatal(start.Err)
		}
		// What is kept: at most 16 MiB, give or take a 1 MiB segment and
		// the records' framing.
		if kept := int64(n) - start.Offset; start.Offset > 0 {
			if kept*size > 18<<20 {
				t.Fatalf("%d records of %d bytes kept, want at most 16 MiB", kept, size)
			}
			t.Logf("start offset %d of %d: %d MiB kept", start.Offset, n, kept*size>>20)
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("start offset still 0 after %d records of %d bytes: nothing dropped", n, size)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
