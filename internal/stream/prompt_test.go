package stream_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/stream"
)

func TestPromptWholeBody(t *testing.T) {
	for _, length := range []int64{-1, 11} {
		var p stream.Prompt
		buf := bus.GetBuffer()
		data, more, err := p.First(strings.NewReader("hello world"), buf, 100, length, time.Second)
		if err != nil || more || string(data) != "hello world" {
			t.Errorf("length %d: First = %q, %v, %v; want the whole body, no more", length, data, more, err)
		}
		if n, err := p.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Errorf("length %d: Read after a whole body = %d, %v; want EOF", length, n, err)
		}
		bus.PutBuffer(buf)
	}
}

func TestPromptLongerThanMax(t *testing.T) {
	var p stream.Prompt
	buf := bus.GetBuffer()
	defer bus.PutBuffer(buf)
	body := strings.Repeat("x", 10000)
	data, more, err := p.First(strings.NewReader(body), buf, 3000, int64(len(body)), time.Second)
	if err != nil || !more || len(data) != 3000 {
		t.Fatalf("First = %d bytes, %v, %v; want 3000 and more", len(data), more, err)
	}
	rest, err := io.ReadAll(&p)
	if err != nil || len(data)+len(rest) != len(body) {
		t.Errorf("rest = %d bytes, %v; want %d", len(rest), err, len(body)-len(data))
	}
}

// TestPromptSlowSource: what a slow source has sent goes at once; a read
// left in progress is taken by Read.
func TestPromptSlowSource(t *testing.T) {
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte("first"))
		time.Sleep(300 * time.Millisecond)
		_, _ = pw.Write([]byte("second"))
		pw.Close()
	}()
	var p stream.Prompt
	buf := bus.GetBuffer()
	defer bus.PutBuffer(buf)
	start := time.Now()
	data, more, err := p.First(pr, buf, 1<<20, -1, time.Second)
	took := time.Since(start)
	if err != nil || !more || string(data) != "first" {
		t.Fatalf("First = %q, %v, %v; want what came first, and more", data, more, err)
	}
	if took > 200*time.Millisecond {
		t.Errorf("First took %v, want it not to wait for the slow rest", took)
	}
	rest, err := io.ReadAll(&p)
	if err != nil || string(rest) != "second" {
		t.Errorf("rest = %q, %v; want second", rest, err)
	}
}

// TestPromptNothingYet: a source that sends nothing within settle gives
// an empty first part; Wait ends a read in progress once the source is
// closed.
func TestPromptNothingYet(t *testing.T) {
	pr, pw := io.Pipe()
	var p stream.Prompt
	buf := bus.GetBuffer()
	data, more, err := p.First(pr, buf, 1<<20, -1, 20*time.Millisecond)
	if err != nil || !more || len(data) != 0 || !p.Pending() {
		t.Fatalf("First = %q, %v, %v, pending %v; want nothing yet, more, a read pending", data, more, err, p.Pending())
	}
	if p.Done() {
		t.Error("Done with the source silent, want a read in progress")
	}
	pw.CloseWithError(io.ErrClosedPipe)
	p.Wait()
	if p.Pending() {
		t.Error("Pending after Wait")
	}
	bus.PutBuffer(buf)
}

func TestPromptShortOfLength(t *testing.T) {
	var p stream.Prompt
	buf := bus.GetBuffer()
	defer bus.PutBuffer(buf)
	if _, _, err := p.First(strings.NewReader("abc"), buf, 100, 10, time.Second); err != io.ErrUnexpectedEOF {
		t.Errorf("First of a body shorter than declared = %v, want ErrUnexpectedEOF", err)
	}
}
