package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

func frame(seq uint32, data string, end bool) *envelope.Frame {
	return &envelope.Frame{ID: 1, Seq: seq, Data: []byte(data), End: end}
}

func readAll(t *testing.T, q *stream.Inbound) (string, int64) {
	var b strings.Builder
	var granted int64
	for {
		c, grant, err := q.Next(ctx(t))
		granted += grant
		if err == io.EOF {
			return b.String(), granted
		}
		if err != nil {
			t.Fatalf("Next = %v", err)
		}
		b.Write(c.Data)
	}
}

func TestInboundReorders(t *testing.T) {
	q := stream.NewInbound(1 << 20)
	q.Push(frame(3, "c", false))
	q.Push(frame(1, "a", false))
	q.Push(frame(4, "", true))
	q.Push(frame(2, "b", false))
	q.Push(frame(2, "B", false)) // a duplicate is dropped
	got, _ := readAll(t, q)
	if got != "abc" {
		t.Errorf("read %q, want abc", got)
	}
}

func TestInboundTrailers(t *testing.T) {
	q := stream.NewInbound(1 << 20)
	f := frame(1, "x", true)
	f.Trailers = []string{"grpc-status", "0"}
	q.Push(f)
	if got, _ := readAll(t, q); got != "x" {
		t.Errorf("read %q, want x", got)
	}
	if diff := cmp.Diff(q.Trailers(), []string{"grpc-status", "0"}); diff != "" {
		t.Errorf("Trailers (-got +want):\n%s", diff)
	}
}

func TestInboundGrantsAsItIsRead(t *testing.T) {
	const window = 4000
	q := stream.NewInbound(window)
	for i := range 10 {
		q.Push(frame(uint32(i+1), strings.Repeat("x", 300), false))
	}
	q.Push(frame(11, "", true))
	_, granted := readAll(t, q)
	// Ten frames of 300 bytes cost 10*(300+64) = 3640; grants come in
	// quarters of the window, so all but the last partial quarter.
	if granted < 3*window/4 || granted > 3640 {
		t.Errorf("granted %d for 3640 consumed, want at least three quarters of the window", granted)
	}
}

func TestInboundFlowControlViolation(t *testing.T) {
	q := stream.NewInbound(1000)
	for i := range 10 {
		q.Push(frame(uint32(i+1), strings.Repeat("x", 500), false))
	}
	_, _, err := q.Next(ctx(t))
	if !errors.Is(err, stream.ErrFlowControl) {
		t.Errorf("Next after 5000 bytes on a 1000-byte window = %v, want ErrFlowControl", err)
	}
}

func TestInboundFail(t *testing.T) {
	q := stream.NewInbound(1000)
	q.Push(frame(1, "a", false))
	boom := errors.New("cancelled")
	q.Fail(boom)
	if _, _, err := q.Next(ctx(t)); err != boom {
		t.Errorf("Next after Fail = %v, want %v", err, boom)
	}
}

func TestWindow(t *testing.T) {
	w := stream.NewWindow(100)
	if err := w.Take(ctx(t), 150); err != nil { // may overdraw once
		t.Fatal(err)
	}
	took := make(chan error, 1)
	go func() { took <- w.Take(ctx(t), 10) }()
	select {
	case err := <-took:
		t.Fatalf("Take with no credit returned %v, want it to wait", err)
	case <-time.After(20 * time.Millisecond):
	}
	w.Grant(100)
	if err := <-took; err != nil {
		t.Fatalf("Take after Grant = %v", err)
	}
	boom := errors.New("closed")
	w.Close(boom)
	if err := w.Take(ctx(t), 1); err != boom {
		t.Errorf("Take after Close = %v, want %v", err, boom)
	}
}

func TestReadFirst(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		max      int
		length   int64
		want     string
		wantMore bool
		wantErr  bool
	}{
		{"fits", "hello", 10, 5, "hello", false, false},
		{"fits unknown length", "hello", 10, -1, "hello", false, false},
		{"exactly max, known", "hello", 5, 5, "hello", false, false},
		{"exactly max, unknown", "hello", 5, -1, "hello", true, false},
		{"longer", "hello world", 5, 11, "hello", true, false},
		{"empty", "", 5, 0, "", false, false},
		{"short of its length", "hel", 10, 5, "", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := bus.GetBuffer()
			defer bus.PutBuffer(buf)
			got, more, err := stream.ReadFirst(strings.NewReader(tt.body), buf, tt.max, tt.length)
			if (err != nil) != tt.wantErr || string(got) != tt.want || more != tt.wantMore {
				t.Errorf("ReadFirst = %q, %v, %v; want %q, %v, error %v", got, more, err, tt.want, tt.wantMore, tt.wantErr)
			}
		})
	}
}

// capture is a broker that records the frames published to it.
type capture struct {
	mu     sync.Mutex
	frames []envelope.Frame
}

func (c *capture) Publish(_ context.Context, _ string, data []byte) error {
	_, msg, err := envelope.Unwrap(data)
	if err != nil {
		return err
	}
	var f envelope.Frame
	if err := f.Unmarshal(bytes.Clone(msg)); err != nil {
		return err
	}
	c.mu.Lock()
	c.frames = append(c.frames, f)
	c.mu.Unlock()
	return nil
}

func (c *capture) Subscribe(context.Context, string, broker.Handler) (broker.Subscription, error) {
	return nil, nil
}

func (c *capture) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	return nil, nil
}

func (c *capture) Close() error { return nil }

func TestSenderCopy(t *testing.T) {
	b := &capture{}
	s := stream.Sender{Pub: bus.NewPublisher(b), Subject: "x", ID: 9, Source: "me", Window: stream.NewWindow(1 << 20)}
	body := strings.Repeat("0123456789", 25) // 250 bytes
	n, err := s.Copy(ctx(t), strings.NewReader(body), make([]byte, 100), true, 0, 1000,
		func() []string { return []string{"k", "v"} })
	if err != nil || n != 250 {
		t.Fatalf("Copy = %d, %v; want 250, nil", n, err)
	}
	var got strings.Builder
	for i, f := range b.frames {
		if f.Seq != uint32(i+1) || f.ID != 9 || f.Source != "me" {
			t.Errorf("frame %d = seq %d id %d source %q", i, f.Seq, f.ID, f.Source)
		}
		got.Write(f.Data)
	}
	last := b.frames[len(b.frames)-1]
	if !last.End || !cmp.Equal(last.Trailers, []string{"k", "v"}) || got.String() != body || len(b.frames) != 3 {
		t.Errorf("%d frames, last end=%v trailers=%v, body intact %v; want 3 frames, the last with end and trailers",
			len(b.frames), last.End, last.Trailers, got.String() == body)
	}
	if _, err := (&stream.Sender{Pub: bus.NewPublisher(b), Window: stream.NewWindow(1 << 20)}).Copy(ctx(t),
		strings.NewReader(body), make([]byte, 100), true, 0, 200, nil); !errors.Is(err, stream.ErrTooLarge) {
		t.Errorf("Copy over the limit = %v, want ErrTooLarge", err)
	}
}
