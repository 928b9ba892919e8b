package adapter

import (
	"crypto/tls"
	"errors"
	"net/http"
	"syscall"
	"testing"
)

// TestClientError: a failed call reads as net/http's Client.Do would say
// it, a plain-HTTP answer to a TLS handshake included.
func TestClientError(t *testing.T) {
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := clientError(req, syscall.ECONNREFUSED)
	if want := `Post "http://127.0.0.1:1/orders": connection refused`; got.Error() != want || !errors.Is(got, syscall.ECONNREFUSED) {
		t.Errorf("got %q, want %q wrapping ECONNREFUSED", got, want)
	}
	var rh tls.RecordHeaderError
	copy(rh.RecordHeader[:], "HTTP/")
	if got := clientError(req, rh); !errors.Is(got, http.ErrSchemeMismatch) {
		t.Errorf("a plain-HTTP answer to TLS: %v, want http.ErrSchemeMismatch", got)
	}
}
