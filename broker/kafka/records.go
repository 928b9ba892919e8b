package kafka

import (
	"math/bits"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Publish copies each message, as its caller may reuse data once Publish
// returns while franz-go sends it later. The record and the copy come from
// pools by the message's size and go back once franz-go is done with the
// record (its promise), which nothing of franz-go's touches after: a new
// copy for every 16 KiB message was a third of what the Kafka client side
// allocated, so of the garbage collection a Kafka sidecar pays for.
const (
	minRecordShift = 9  // the smallest class holds 512 B
	maxRecordShift = 16 // the largest 64 KiB; larger messages are copied into new memory
)

// recordPools holds *kgo.Record whose Value has the capacity of its class.
var recordPools [maxRecordShift - minRecordShift + 1]sync.Pool

// recordClass returns the pool for a message of n bytes, or -1 when it is
// too large to pool.
func recordClass(n int) int {
	switch {
	case n <= 1<<minRecordShift:
		return 0
	case n > 1<<maxRecordShift:
		return -1
	}
	return bits.Len(uint(n-1)) - minRecordShift
}

// newRecord returns a record of subject holding a copy of data.
func newRecord(subject string, data []byte) *kgo.Record {
	class := recordClass(len(data))
	if class < 0 {
		return &kgo.Record{Topic: subject, Value: append([]byte(nil), data...)}
	}
	r, _ := recordPools[class].Get().(*kgo.Record)
	if r == nil {
		r = &kgo.Record{Value: make([]byte, 0, 1<<(class+minRecordShift))}
	}
	r.Topic, r.Value = subject, append(r.Value[:0], data...)
	return r
}

// recycle returns a record newRecord made to its pool once franz-go has
// finished with it; the caller must not use it again.
func recycle(r *kgo.Record) {
	class := recordClass(cap(r.Value))
	if class < 0 || cap(r.Value) != 1<<(class+minRecordShift) {
		return // not one of the pools' (a large message's copy)
	}
	*r = kgo.Record{Value: r.Value[:0]} // hold no topic, context or headers
	recordPools[class].Put(r)
}
