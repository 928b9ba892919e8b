package grpcwire_test

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/busmesh/busmesh/internal/grpcwire"
)

func TestMessages(t *testing.T) {
	msgs := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte("x"), 70000)}
	var stream []byte
	for _, m := range msgs {
		stream = grpcwire.AppendMessage(stream, m)
	}
	// A whole stream splits back into its messages.
	got, rest := grpcwire.SplitMessages(stream)
	if len(rest) != 0 || len(got) != 3 || !bytes.Equal(got[2], msgs[2]) || len(got[1]) != 0 {
		t.Fatalf("SplitMessages = %d messages, %d bytes left; want 3, 0", len(got), len(rest))
	}
	// Cut anywhere, the complete ones split off and the rest waits.
	got, rest = grpcwire.SplitMessages(stream[:20])
	if len(got) != 2 || len(rest) != 20-8-5 {
		t.Errorf("SplitMessages(first 20 bytes) = %d messages, %d left; want 2, 7", len(got), len(rest))
	}
	// Read one by one from a reader.
	r := bytes.NewReader(stream)
	for i, want := range msgs {
		m, err := grpcwire.ReadMessage(r, 1<<20)
		if err != nil || !bytes.Equal(m, want) {
			t.Fatalf("ReadMessage %d = %d bytes, %v", i, len(m), err)
		}
	}
	if _, err := grpcwire.ReadMessage(r, 1<<20); err != io.EOF {
		t.Errorf("ReadMessage at the end = %v, want io.EOF", err)
	}
	if _, err := grpcwire.ReadMessage(bytes.NewReader(stream[13:]), 100); err == nil {
		t.Error("ReadMessage of a 70000-byte message with a 100-byte limit succeeded")
	}
	if _, err := grpcwire.ReadMessage(bytes.NewReader(stream[:6]), 100); err == nil || err == io.EOF {
		t.Errorf("ReadMessage of a cut message = %v, want an error other than io.EOF", err)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	st, err := status.New(codes.NotFound, "no such order: ünicode").WithDetails(durationpb.New(5))
	if err != nil {
		t.Fatal(err)
	}
	trailer := metadata.Pairs("x-trace", "abc", "x-bin-bin", "\x00\xff")
	list := grpcwire.AppendStatus(nil, st, trailer)
	got, md := grpcwire.Status(list)
	if got.Code() != codes.NotFound || got.Message() != st.Message() || len(got.Details()) != 1 {
		t.Errorf("Status = %v %q %v, want NotFound with the message and one detail", got.Code(), got.Message(), got.Details())
	}
	if diff := cmp.Diff(md, trailer); diff != "" {
		t.Errorf("trailer metadata (-got +want):\n%s", diff)
	}
	if got, _ := grpcwire.Status(nil); got.Code() != codes.Internal {
		t.Errorf("Status of no trailers = %v, want Internal: the call ended without a status", got.Code())
	}
}

func TestMetadataLeavesOutReserved(t *testing.T) {
	md := metadata.MD{":authority": {"x"}, "grpc-timeout": {"1S"}, "content-type": {"application/grpc"},
		"user-agent": {"grpc-go"}, "x-keep": {"1", "2"}}
	list := grpcwire.AppendMetadata(nil, md)
	if diff := cmp.Diff(list, []string{"x-keep", "1", "x-keep", "2"}); diff != "" {
		t.Errorf("AppendMetadata (-got +want):\n%s", diff)
	}
	back := grpcwire.Metadata(append(list, "Bad Key", "v", "X-Upper", "u"))
	if diff := cmp.Diff(back, metadata.MD{"x-keep": {"1", "2"}, "x-upper": {"u"}}); diff != "" {
		t.Errorf("Metadata (-got +want):\n%s", diff)
	}
}

// chanStream is a MessageStream fed by hand.
type item struct {
	data []byte
	err  error
}

type chanStream chan item

func (s chanStream) RecvMsg(m any) error {
	r := <-s
	m.(*grpcwire.Message).Data = r.data
	return r.err
}

// First waits at most Settle for a first message: a side that sends nothing
// yet (it waits for the other's header) starts the call empty, and its
// messages follow through Next.
func TestFirstDoesNotWaitForAMessage(t *testing.T) {
	s := make(chanStream, 3)
	r := grpcwire.Receive(t.Context(), s)
	var body []byte
	var end error
	done := make(chan struct{})
	go func() {
		defer close(done)
		body, end = r.First(t.Context())
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatalf("First still waits for a message after 1s, want about Settle (%v)", grpcwire.Settle)
	}
	if len(body) != 0 || end != nil {
		t.Fatalf("First = %q, %v; want nothing and the stream going on", body, end)
	}
	s <- item{data: []byte("late")}
	if msg, err := r.Next(t.Context()); err != nil || string(msg) != "late" {
		t.Fatalf("Next = %q, %v; want the late message", msg, err)
	}
	s <- item{err: io.EOF}
	if _, err := r.Next(t.Context()); err != io.EOF {
		t.Fatalf("Next = %v, want io.EOF", err)
	}
	r.Wait()

	// A unary side: its message and its end within Settle, in one body.
	s = make(chanStream, 3)
	s <- item{data: []byte("one")}
	s <- item{err: io.EOF}
	r = grpcwire.Receive(t.Context(), s)
	body, end = r.First(t.Context())
	if want := grpcwire.AppendMessage(nil, []byte("one")); !bytes.Equal(body, want) || end != io.EOF {
		t.Fatalf("First = %q, %v; want %q and io.EOF", body, end, want)
	}
	r.Wait()
}
