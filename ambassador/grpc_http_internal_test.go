package ambassador

import (
	"net/http"
	"testing"
)

// TestIsGRPC: an HTTP port serves as gRPC the HTTP/2 requests with a gRPC
// content type, and nothing else (gRPC-Web is plain HTTP to the mesh).
func TestIsGRPC(t *testing.T) {
	for _, tc := range []struct {
		proto int
		ct    string
		want  bool
	}{
		{2, "application/grpc", true},
		{2, "application/grpc+proto", true},
		{2, "application/grpc+json", true},
		{2, "application/grpc;charset=utf-8", true},
		{2, "application/grpc-web", false},
		{2, "application/grpc-web-text+proto", false},
		{2, "application/grpcx", false},
		{2, "application/json", false},
		{2, "", false},
		{1, "application/grpc", false},
	} {
		r := &http.Request{ProtoMajor: tc.proto, Header: http.Header{}}
		if tc.ct != "" {
			r.Header.Set("Content-Type", tc.ct)
		}
		if got := isGRPC(r); got != tc.want {
			t.Errorf("HTTP/%d %q: isGRPC = %v, want %v", tc.proto, tc.ct, got, tc.want)
		}
	}
}
