package testutil_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/busmesh/busmesh/internal/testutil"
)

// TestBuffer writes from several goroutines while reading (the race
// detector checks the locking), then reads the whole and the tail.
func TestBuffer(t *testing.T) {
	var b testutil.Buffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 100 {
				fmt.Fprintf(&b, "%d.%02d\n", i, j)
				_ = b.Tail(5)
			}
		})
	}
	wg.Wait()
	if got, want := len(b.String()), 4*100*len("0.00\n"); got != want {
		t.Fatalf("len(String()) = %d, want %d", got, want)
	}
	fmt.Fprint(&b, "end")
	if got := b.Tail(3); got != "end" {
		t.Errorf("Tail(3) = %q, want %q", got, "end")
	}
	var short testutil.Buffer
	fmt.Fprint(&short, "ab")
	if got := short.Tail(10); got != "ab" {
		t.Errorf("Tail(10) of 2 bytes = %q, want %q", got, "ab")
	}
}

// TestBufferKeep: a bounded buffer holds between Keep and 2 × Keep bytes,
// the last ones written.
func TestBufferKeep(t *testing.T) {
	b := testutil.Buffer{Keep: 10}
	for i := range 1000 {
		fmt.Fprintf(&b, "%d", i%10)
		if n := len(b.String()); n > 20 {
			t.Fatalf("after %d bytes the buffer holds %d, want at most 20", i+1, n)
		}
	}
	if got, want := b.Tail(10), "0123456789"; got != want {
		t.Errorf("Tail(10) = %q, want %q", got, want)
	}
}
