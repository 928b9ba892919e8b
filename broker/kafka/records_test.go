package kafka

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRecordClass(t *testing.T) {
	for _, c := range []struct{ n, class, size int }{
		{0, 0, 512}, {1, 0, 512}, {512, 0, 512}, {513, 1, 768}, {768, 1, 768}, {769, 2, 1024},
		{1024, 2, 1024}, {1025, 3, 1536}, {16 << 10, 10, 16 << 10}, {16<<10 + 300, 11, 24 << 10},
		{48 << 10, 13, 48 << 10}, {48<<10 + 1, 14, 64 << 10}, {64 << 10, 14, 64 << 10},
		{64<<10 + 1, -1, 0}, {1 << 20, -1, 0},
	} {
		class := recordClass(c.n)
		if class != c.class {
			t.Errorf("recordClass(%d) = %d, want %d", c.n, class, c.class)
			continue
		}
		if class >= 0 && recordSize(class) != c.size {
			t.Errorf("recordSize(%d) = %d, want %d (for %d bytes)", class, recordSize(class), c.size, c.n)
		}
	}
	// Every class is the smallest that holds its size, and at most half
	// again as large as a message that needs it.
	for class := range recordClasses {
		size := recordSize(class)
		if recordClass(size) != class {
			t.Errorf("recordClass(recordSize(%d) = %d) = %d", class, size, recordClass(size))
		}
		if class > 0 && 2*size > 3*(recordSize(class-1)+1) {
			t.Errorf("class %d of %d bytes holds a message of %d, over half again as large", class, size, recordSize(class-1)+1)
		}
	}
}

// TestRecordCopies checks that a record holds its own copy of the message,
// pooled or not, and that a recycled record keeps nothing but its buffer.
func TestRecordCopies(t *testing.T) {
	for _, n := range []int{0, 100, 16 << 10, 16<<10 + 300, 64 << 10, 64<<10 + 1} {
		data := bytes.Repeat([]byte{'a'}, n)
		r := newRecord("svc", data)
		for i := range data {
			data[i] = 'b' // the caller reuses its buffer once Publish returns
		}
		if r.Topic != "svc" || !bytes.Equal(r.Value, bytes.Repeat([]byte{'a'}, n)) {
			t.Fatalf("%d bytes: record %q with %d bytes, want svc and the message as published", n, r.Topic, len(r.Value))
		}
		r.Headers = []kgo.RecordHeader{{Key: "k"}}
		class := recordClass(n)
		if class >= 0 && cap(r.Value) != recordSize(class) {
			t.Fatalf("%d bytes: capacity %d, want class %d's %d", n, cap(r.Value), class, recordSize(class))
		}
		recycle(r)
		if class >= 0 && (r.Topic != "" || r.Headers != nil || len(r.Value) != 0 || cap(r.Value) == 0) {
			t.Fatalf("%d bytes: recycled record %+v keeps more than its buffer", n, r)
		}
	}
}
