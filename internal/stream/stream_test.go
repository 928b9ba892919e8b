package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
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
	if got, err := w.TakeUpTo(ctx(t), 150); err != nil || got != 100 { // never overdraws
		t.Fatalf("TakeUpTo(150) on 100 = %d, %v; want 100", got, err)
	}
	took := make(chan error, 1)
	go func() { _, err := w.TakeUpTo(ctx(t), 10); took <- err }()
	select {
	case err := <-took:
		t.Fatalf("TakeUpTo with no credit returned %v, want it to wait", err)
	case <-time.After(20 * time.Millisecond):
	}
	w.Grant(100)
	if err := <-took; err != nil {
		t.Fatalf("TakeUpTo after Grant = %v", err)
	}
	boom := errors.New("closed")
	w.Close(boom)
	if _, err := w.TakeUpTo(ctx(t), 1); err != boom {
		t.Errorf("TakeUpTo after Close = %v, want %v", err, boom)
	}
}

// TestInboundBreakOff: a sender that broke off after some frames has them
// read before its error; a frame after a gap is dropped, no credit is
// granted for a stream that cannot go on, and its budget is freed once the
// error is read.
func TestInboundBreakOff(t *testing.T) {
	b := stream.NewBudget(4 * stream.DefaultWindow)
	q := stream.NewBudgetedInbound(4000, b)
	for i := range 8 {
		q.Push(frame(uint32(i+1), strings.Repeat("x", 300), false))
	}
	q.Push(frame(10, "after a gap", false))
	broke := errors.New("app-unreachable")
	q.BreakOff(broke)
	q.Push(frame(9, "too late", false))
	var got strings.Builder
	for {
		c, grant, err := q.Next(ctx(t))
		if grant != 0 {
			t.Errorf("granted %d after the sender broke off", grant)
		}
		if err != nil {
			if err != broke {
				t.Errorf("Next ended with %v, want %v", err, broke)
			}
			break
		}
		got.Write(c.Data)
	}
	if got.String() != strings.Repeat("x", 2400) {
		t.Errorf("read %d bytes, want the 2400 that came in order before the break", got.Len())
	}
	if used := b.Used(); used != 0 {
		t.Errorf("budget used %d after the error was read, want 0", used)
	}
	empty := stream.NewInbound(1000)
	empty.BreakOff(broke)
	if _, _, err := empty.Next(ctx(t)); err != broke {
		t.Errorf("Next on an empty stream that broke off = %v, want %v", err, broke)
	}
}

// TestBudget: past the sidecar's budget, new streams are offered
// MinWindow and consumed credit is granted back only to MinWindow; a
// stream's credit returns to the budget when it ends, fails or is
// released, and a stream past the budget still moves.
func TestBudget(t *testing.T) {
	b := stream.NewBudget(2 * stream.DefaultWindow)
	var ins []*stream.Inbound
	for range 2 {
		w := b.Offer()
		if w != stream.DefaultWindow {
			t.Fatalf("offer under the budget = %d, want %d", w, stream.DefaultWindow)
		}
		ins = append(ins, stream.NewBudgetedInbound(w, b))
	}
	if w := b.Offer(); w != stream.MinWindow {
		t.Fatalf("offer past the budget = %d, want %d", w, stream.MinWindow)
	}
	small := stream.NewBudgetedInbound(stream.MinWindow, b)
	// The small stream reads on: each chunk it consumes is granted back
	// up to MinWindow, so it never stalls, however full the budget.
	data := strings.Repeat("x", 16<<10)
	granted := int64(0)
	for i := uint32(1); i <= 40; i++ {
		small.Push(frame(i, data, false))
		_, g, err := small.Next(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		granted += g
	}
	if consumed := 40 * stream.Cost(len(data)); granted < consumed-stream.MinWindow {
		t.Errorf("past the budget a reading stream was granted %d of the %d it consumed", granted, consumed)
	}
	if used := b.Used(); used > 2*stream.DefaultWindow+stream.MinWindow {
		t.Errorf("budget used %d, over %d", used, 2*stream.DefaultWindow+stream.MinWindow)
	}
	ins[0].Release()
	ins[1].Fail(errors.New("gone"))
	small.Push(frame(41, "", true))
	if _, _, err := small.Next(ctx(t)); err != io.EOF {
		t.Fatalf("end frame: %v", err)
	}
	if used := b.Used(); used != 0 {
		t.Errorf("budget used %d after every stream ended, want 0", used)
	}
	if w := b.Offer(); w != stream.DefaultWindow {
		t.Errorf("offer after the streams ended = %d, want %d", w, stream.DefaultWindow)
	}
}

// TestSenderSplits: a frame larger than the receiver's credit is sent in
// parts, none over the credit, the last one marked end.
func TestSenderSplits(t *testing.T) {
	pub := &capture{}
	w := stream.NewWindow(stream.Cost(10 << 10))
	s := &stream.Sender{Pub: bus.NewPublisher(pub), Subject: "in", ID: 1, Window: w}
	done := make(chan error, 1)
	go func() { done <- s.Send(ctx(t), make([]byte, 25<<10), true, []string{"k", "v"}) }()
	for range 2 {
		time.Sleep(10 * time.Millisecond)
		w.Grant(stream.Cost(10 << 10))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	pub.mu.Lock()
	frames := pub.frames
	pub.mu.Unlock()
	if len(frames) != 3 {
		t.Fatalf("%d frames, want 3", len(frames))
	}
	total := 0
	for i, f := range frames {
		total += len(f.Data)
		if len(f.Data) > 10<<10 || f.End != (i == 2) || (len(f.Trailers) > 0) != (i == 2) {
			t.Errorf("frame %d: %d bytes, end %v, trailers %v", i, len(f.Data), f.End, f.Trailers)
		}
	}
	if total != 25<<10 {
		t.Errorf("sent %d bytes, want %d", total, 25<<10)
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
	// A read that returns bytes with its error: the bytes are sent, then
	// the error is returned.
	broken := &capture{}
	reset := errors.New("connection reset by peer")
	_, err = (&stream.Sender{Pub: bus.NewPublisher(broken), Window: stream.NewWindow(1 << 20)}).Copy(ctx(t),
		iotest.DataErrReader(io.MultiReader(strings.NewReader("close frame"), iotest.ErrReader(reset))), make([]byte, 100), false, 0, 1000, nil)
	if !errors.Is(err, reset) || !errors.Is(err, stream.ErrReadBody) || len(broken.frames) != 1 || string(broken.frames[0].Data) != "close frame" {
		t.Errorf("Copy of a reader that failed after data = %v with %d frames; want the data sent, then the read error", err, len(broken.frames))
	}
}

// scripted returns its parts one Read each (a part longer than the
// caller's buffer is split), then io.EOF.
type scripted struct{ parts [][]byte }

func (s *scripted) Read(p []byte) (int, error) {
	if len(s.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.parts[0])
	if s.parts[0] = s.parts[0][n:]; len(s.parts[0]) == 0 {
		s.parts = s.parts[1:]
	}
	return n, nil
}

// TestSenderRelay: a quiet stream is read 4 KiB at a time; a read that
// fills that switches to chunk-sized reads while the bulk lasts, and a
// short read switches back; every byte arrives in order, the last frame
// marked end.
func TestSenderRelay(t *testing.T) {
	b := &capture{}
	s := stream.Sender{Pub: bus.NewPublisher(b), Window: stream.NewWindow(1 << 30)}
	bulk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	parts := [][]byte{[]byte("hello"), bulk, []byte("bye")}
	var want []byte
	for _, p := range parts {
		want = append(want, p...)
	}
	n, err := s.Relay(ctx(t), &scripted{parts: parts}, 16<<10)
	if err != nil || n != int64(len(want)) {
		t.Fatalf("Relay = %d, %v; want %d, nil", n, err, len(want))
	}
	var got []byte
	var sizes []int
	for _, f := range b.frames {
		got = append(got, f.Data...)
		sizes = append(sizes, len(f.Data))
	}
	// hello; 4 KiB (fills the small buffer); 16 KiB reads for the rest of
	// the bulk (60 KiB: 3 full, then 12 KiB, short: back to small); bye;
	// the end.
	wantSizes := []int{5, 4096, 16384, 16384, 16384, 12288, 3, 0}
	if !bytes.Equal(got, want) || !cmp.Equal(sizes, wantSizes) || !b.frames[len(b.frames)-1].End {
		t.Errorf("frames of %v bytes (end %v), data intact %v; want %v, the last marked end",
			sizes, b.frames[len(b.frames)-1].End, bytes.Equal(got, want), wantSizes)
	}
}

// TestReaderWriteTo: io.Copy from a Reader hands each frame's data to the
// writer as it is, grants credit as it goes, and ends at the end frame.
func TestReaderWriteTo(t *testing.T) {
	q := stream.NewInbound(4000)
	for i := range 8 {
		q.Push(frame(uint32(i+1), strings.Repeat("x", 300), false))
	}
	q.Push(frame(9, "!", true))
	var granted int64
	r := stream.NewReader(ctx(t), q, func(n int64) error { granted += n; return nil })
	var w bytes.Buffer
	n, err := io.Copy(&w, r)
	if err != nil || n != 2401 || w.String() != strings.Repeat("x", 2400)+"!" {
		t.Fatalf("io.Copy = %d, %v; want the 2,401 bytes", n, err)
	}
	if granted == 0 {
		t.Error("no credit granted back while reading 2,400 bytes on a 4,000-byte window")
	}
}
