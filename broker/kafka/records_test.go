package kafka

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRecordClass(t *testing.T) {
	for _, c := range []struct{ n, class int }{
		{0, 0}, {1, 0}, {512, 0}, {513, 1}, {1024, 1}, {1025, 2},
		{16 << 10, 5}, {16<<10 + 1, 6}, {64 << 10, 7}, {64<<10 + 1, -1}, {1 << 20, -1},
	} {
		if got := recordClass(c.n); got != c.class {
			t.Errorf("recordClass(%d) = %d, want %d", c.n, got, c.class)
		}
		if c.class >= 0 && c.n > 1<<(c.class+minRecordShift) {
			t.Errorf("class %d of %d bytes holds only %d", c.class, c.n, 1<<(c.class+minRecordShift))
		}
	}
}

// TestRecordCopies checks that a record holds its own copy of the message,
// pooled or not, and that a recycled record keeps nothing but its buffer.
func TestRecordCopies(t *testing.T) {
	for _, n := range []int{0, 100, 16 << 10, 64 << 10, 64<<10 + 1} {
		data := bytes.Repeat([]byte{'a'}, n)
		r := newRecord("svc", data)
		for i := range data {
			data[i] = 'b' // the caller reuses its buffer once Publish returns
		}
		if r.Topic != "svc" || !bytes.Equal(r.Value, bytes.Repeat([]byte{'a'}, n)) {
			t.Fatalf("%d bytes: record %q with %d bytes, want svc and the message as published", n, r.Topic, len(r.Value))
		}
		r.Headers = []kgo.RecordHeader{{Key: "k"}}
		pooled := recordClass(n) >= 0
		if pooled != (cap(r.Value) == 1<<(recordClass(n)+minRecordShift)) {
			t.Fatalf("%d bytes: capacity %d", n, cap(r.Value))
		}
		recycle(r)
		if pooled && (r.Topic != "" || r.Headers != nil || len(r.Value) != 0 || cap(r.Value) == 0) {
			t.Fatalf("%d bytes: recycled record %+v keeps more than its buffer", n, r)
		}
	}
}
