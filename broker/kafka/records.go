package kafka

import (
	"math/bits"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record size classes: 512 B, 768 B, 1 KiB, 1.5 KiB … 48 KiB, 64 KiB, so a
// pooled copy is at most half again as large as its message (a 16 KiB body
// with its envelope's head takes 24 KiB, not 32). Larger messages get a new
// copy.
const (
	minRecordShift = 9  // the smallest class holds 512 B
	maxRecordShift = 16 // the largest 64 KiB
	recordClasses  = 2*(maxRecordShift-minRecordShift) + 1
)

// recordPools holds, per class, *kgo.Record whose Value has the capacity
// of the class.
var recordPools [recordClasses]sync.Pool

// recordClass returns the smallest class that holds n bytes, or -1 when
// none does.
func recordClass(n int) int {
	switch {
	case n <= 1<<minRecordShift:
		return 0
	case n > 1<<maxRecordShift:
		return -1
	}
	s := bits.Len(uint(n - 1)) // 1<<(s-1) < n <= 1<<s
	if n <= 3<<(s-2) {
		return 2*(s-minRecordShift) - 1
	}
	return 2 * (s - minRecordShift)
}

// recordSize returns the capacity of a class's records.
func recordSize(class int) int {
	if class%2 == 1 {
		return 3 << (minRecordShift + class/2 - 1)
	}
	return 1 << (minRecordShift + class/2)
}

// newRecord returns a record of subject holding a copy of data.
//
// Publish copies each message, as its caller may reuse data once Publish
// returns while franz-go sends it later. The record and the copy come from
// recordPools and go back in the record's promise (recycle), which is the
// last franz-go (v1.22) does with a record: it reads the record's size
// before the promise and nothing after. A new copy of every 16 KiB message
// was a third of what the Kafka client side allocated, and so of the
// garbage collection a Kafka sidecar pays for.
func newRecord(subject string, data []byte) *kgo.Record {
	class := recordClass(len(data))
	if class < 0 {
		return &kgo.Record{Topic: subject, Value: append([]byte(nil), data...)}
	}
	r, _ := recordPools[class].Get().(*kgo.Record)
	if r == nil {
		r = &kgo.Record{Value: make([]byte, 0, recordSize(class))}
	}
	r.Topic, r.Value = subject, append(r.Value[:0], data...)
	return r
}

// recycle returns a record newRecord made to its pool once franz-go has
// finished with it; the caller must not use it again.
func recycle(r *kgo.Record) {
	class := recordClass(cap(r.Value))
	if class < 0 || cap(r.Value) != recordSize(class) {
		return // not one of the pools' (a large message's copy)
	}
	*r = kgo.Record{Value: r.Value[:0]} // hold no topic, context or headers
	recordPools[class].Put(r)
}
