package envelope_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/busmesh/busmesh/internal/envelope"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

func sampleRequest() *envelope.Request {
	return &envelope.Request{
		ID:            0xdeadbeefcafe,
		Source:        "caller-1",
		SourceService: "web",
		Service:       "orders",
		Version:       "v2",
		Instance:      "orders-3",
		Protocol:      envelope.ProtocolHTTP,
		Method:        "POST",
		Path:          "/orders?id=7&x=%20",
		Headers:       []string{"Content-Type", "application/json", "X-A", "1", "X-A", "2", "X-Bin", "\xff\x00"},
		Body:          []byte(`{"qty":1}`),
		More:          true,
		ReplyTo:       "busmesh.inbox.caller-1",
		Deadline:      1_700_000_000_123_456_789,
		TraceParent:   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		TraceState:    "a=b",
		Window:        1 << 20,
		Host:          "orders",
		AttemptOf:     41,
	}
}

func sampleResponse() *envelope.Response {
	return &envelope.Response{
		ID:       7,
		Status:   502,
		Headers:  []string{"Content-Type", "text/plain"},
		Body:     []byte("bad gateway"),
		More:     false,
		Instance: "orders-1",
		Error:    "app-unreachable",
		ReplyTo:  "busmesh.inbox.orders-1",
		Window:   65536,
		Trailers: []string{"grpc-status", "0"},
		Detail:   "dial tcp 127.0.0.1:8080: connection refused",
	}
}

func sampleFrame() *envelope.Frame {
	return &envelope.Frame{
		ID: 9, Seq: 3, Data: []byte("chunk"), End: true,
		Trailers:     []string{"grpc-status", "14", "grpc-message", "unavailable"},
		WindowUpdate: 4096, Cancel: true, Error: "timeout", ReplyTo: "busmesh.inbox.x",
		Instance: "i-1", Source: "caller-1",
	}
}

func TestRoundTrip(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		in := sampleRequest()
		kind, msg, err := envelope.Unwrap(in.AppendEnvelope(nil))
		if err != nil || kind != envelope.KindRequest {
			t.Fatalf("Unwrap = %v, %v; want request, nil", kind, err)
		}
		var out envelope.Request
		if err := out.Unmarshal(msg); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&out, in); diff != "" {
			t.Errorf("round trip (-got +want):\n%s", diff)
		}
	})
	t.Run("response", func(t *testing.T) {
		in := sampleResponse()
		_, msg, err := envelope.Unwrap(in.AppendEnvelope(nil))
		if err != nil {
			t.Fatal(err)
		}
		var out envelope.Response
		if err := out.Unmarshal(msg); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&out, in); diff != "" {
			t.Errorf("round trip (-got +want):\n%s", diff)
		}
	})
	t.Run("frame", func(t *testing.T) {
		in := sampleFrame()
		_, msg, err := envelope.Unwrap(in.AppendEnvelope(nil))
		if err != nil {
			t.Fatal(err)
		}
		var out envelope.Frame
		if err := out.Unmarshal(msg); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&out, in); diff != "" {
			t.Errorf("round trip (-got +want):\n%s", diff)
		}
	})
}

func TestEncodedSize(t *testing.T) {
	r, s, f := sampleRequest(), sampleResponse(), sampleFrame()
	for name, c := range map[string]struct{ got, want int }{
		"request":  {r.EncodedSize(), len(r.AppendEnvelope(nil))},
		"response": {s.EncodedSize(), len(s.AppendEnvelope(nil))},
		"frame":    {f.EncodedSize(), len(f.AppendEnvelope(nil))},
	} {
		if c.got != c.want {
			t.Errorf("%s EncodedSize() = %d, want %d", name, c.got, c.want)
		}
	}
}

// TestMatchesGeneratedCode checks the hand codec against the generated code
// of envelope.proto, both ways.
func TestMatchesGeneratedCode(t *testing.T) {
	req := sampleRequest()
	req.Headers = req.Headers[:6] // the generated code is checked with UTF-8 text
	for name, enc := range map[string][]byte{
		"request":  req.AppendEnvelope(nil),
		"response": sampleResponse().AppendEnvelope(nil),
		"frame":    sampleFrame().AppendEnvelope(nil),
	} {
		t.Run(name, func(t *testing.T) {
			var pb busmeshv1.Envelope
			if err := proto.Unmarshal(enc, &pb); err != nil {
				t.Fatalf("generated code cannot decode the hand encoding: %v", err)
			}
			back, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, enc) {
				t.Errorf("generated encoding differs from hand encoding:\n got %x\nwant %x", back, enc)
			}
		})
	}
	// A field the hand codec does not know is skipped, as proto3 requires.
	pb := &busmeshv1.Envelope{Kind: &busmeshv1.Envelope_Request{Request: &busmeshv1.Request{Id: 5, Service: "s"}}}
	enc, _ := proto.Marshal(pb)
	_, msg, err := envelope.Unwrap(enc)
	if err != nil {
		t.Fatal(err)
	}
	var r envelope.Request
	if err := r.Unmarshal(append(msg, 0xa0, 0x06, 0x01)); err != nil { // field 100, varint 1
		t.Fatalf("Unmarshal with an unknown field = %v, want nil", err)
	}
	if r.ID != 5 || r.Service != "s" {
		t.Errorf("decoded %+v, want ID 5 and Service s", r)
	}
}

func TestMalformed(t *testing.T) {
	good := sampleRequest().AppendEnvelope(nil)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte("hello world, not an envelope")},
		{"truncated", good[:len(good)-3]},
		{"trailing", append(append([]byte{}, good...), 0)},
		{"unknown kind", []byte{0x22, 0x00}}, // field 4
		{"odd headers", (&envelope.Response{Headers: []string{"lonely"}}).AppendEnvelope(nil)},
		{"wrong wire type", []byte{0x0a, 0x02, 0x08, 0x01}}, // request.id as varint
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decode(tt.in)
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("decode(%x) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

func TestHeaderLimit(t *testing.T) {
	h := make([]string, envelope.MaxHeaderFields+2)
	if err := decode((&envelope.Request{Headers: h}).AppendEnvelope(nil)); !errors.Is(err, envelope.ErrMalformed) {
		t.Fatalf("decode(%d header entries) = %v, want ErrMalformed", len(h), err)
	}
}

// message is what the three envelope messages have in common.
type message interface {
	AppendEnvelope([]byte) []byte
	Unmarshal([]byte) error
}

func newMessage(k envelope.Kind) message {
	switch k {
	case envelope.KindRequest:
		return new(envelope.Request)
	case envelope.KindResponse:
		return new(envelope.Response)
	default:
		return new(envelope.Frame)
	}
}

func decode(data []byte) error {
	_, err := decodeMessage(data)
	return err
}

func decodeMessage(data []byte) (message, error) {
	kind, msg, err := envelope.Unwrap(data)
	if err != nil {
		return nil, err
	}
	m := newMessage(kind)
	return m, m.Unmarshal(msg)
}

// FuzzDecode feeds arbitrary bytes to the decoder: it must not panic, and
// what it accepts must re-encode stably, to bytes that the generated code
// reads and writes back identically.
func FuzzDecode(f *testing.F) {
	f.Add(sampleRequest().AppendEnvelope(nil))
	f.Add(sampleResponse().AppendEnvelope(nil))
	f.Add(sampleFrame().AppendEnvelope(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(data)
		if err != nil {
			return
		}
		enc := m.AppendEnvelope(nil)
		m2, err := decodeMessage(enc)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v", err)
		}
		if again := m2.AppendEnvelope(nil); !bytes.Equal(again, enc) {
			t.Fatalf("encoding is not stable:\n got %x\nwant %x", again, enc)
		}
		var pb busmeshv1.Envelope
		if err := proto.Unmarshal(enc, &pb); err != nil {
			if strings.Contains(err.Error(), "invalid UTF-8") {
				return // the generated code rejects non-UTF-8 strings; the hand codec carries them
			}
			t.Fatalf("generated code rejects what the hand codec accepted: %v", err)
		}
		back, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, enc) {
			t.Fatalf("generated code re-encodes differently:\n got %x\nwant %x", back, enc)
		}
	})
}

// TestOpenSkipsWhatItDoesNotKnow: an envelope from a newer sidecar, with a
// field this version does not know and the credential fields, decodes.
func TestOpenSkipsWhatItDoesNotKnow(t *testing.T) {
	enc := sampleRequest().AppendEnvelope(nil)
	enc = protowire.AppendTag(enc, 99, protowire.BytesType) // unknown
	enc = protowire.AppendString(enc, "from the future")
	enc = protowire.AppendTag(enc, 10, protowire.BytesType) // key id
	enc = protowire.AppendBytes(enc, []byte{1, 2, 3})
	enc = protowire.AppendTag(enc, 12, protowire.Fixed64Type) // timestamp
	enc = protowire.AppendFixed64(enc, 1234)
	enc = protowire.AppendTag(enc, envelope.FieldMAC, protowire.BytesType)
	enc = protowire.AppendBytes(enc, bytes.Repeat([]byte{7}, 32))
	e, err := envelope.Open(enc)
	if err != nil {
		t.Fatalf("Open = %v, want nil", err)
	}
	if e.Kind != envelope.KindRequest || e.Cred.Timestamp != 1234 || len(e.Cred.MAC) != 32 ||
		!bytes.Equal(e.Cred.KeyID, []byte{1, 2, 3}) {
		t.Errorf("Open = kind %v, credentials %+v", e.Kind, e.Cred)
	}
	var r envelope.Request
	if err := r.Unmarshal(e.Msg); err != nil || r.ID != sampleRequest().ID {
		t.Errorf("request = %+v, %v", r, err)
	}
	var pb busmeshv1.Envelope
	if err := proto.Unmarshal(enc, &pb); err != nil {
		t.Fatalf("generated code rejects it: %v", err)
	}
	if pb.GetTimestampUnixNano() != 1234 || len(pb.GetMac()) != 32 {
		t.Errorf("generated code reads timestamp %d, mac %x", pb.GetTimestampUnixNano(), pb.GetMac())
	}
	two := append(sampleRequest().AppendEnvelope(nil), sampleFrame().AppendEnvelope(nil)...)
	if _, err := envelope.Open(two); !errors.Is(err, envelope.ErrMalformed) {
		t.Errorf("Open(two messages) = %v, want ErrMalformed", err)
	}
}
