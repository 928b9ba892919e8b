package envelope_test

import (
	"testing"

	"github.com/busmesh/busmesh/internal/envelope"
)

func BenchmarkRequestEncode(b *testing.B) {
	r := sampleRequest()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = r.AppendEnvelope(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkRequestDecode(b *testing.B) {
	data := sampleRequest().AppendEnvelope(nil)
	var r envelope.Request
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_, msg, err := envelope.Unwrap(data)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Unmarshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResponseDecode(b *testing.B) {
	data := sampleResponse().AppendEnvelope(nil)
	var r envelope.Response
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		_, msg, _ := envelope.Unwrap(data)
		if err := r.Unmarshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}
