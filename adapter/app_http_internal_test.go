package adapter

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/busmesh/busmesh/internal/config"
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

// TestHost: the application gets the caller's Host by default and the
// target's own with adapter.host: target; X-Forwarded-Host is the caller's
// either way.
func TestHost(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.Host, r.Header.Get("X-Forwarded-Host"))
	}))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")
	for mode, want := range map[string]string{
		"":                "orders.mesh orders.mesh",
		config.HostCaller: "orders.mesh orders.mesh",
		config.HostTarget: target + " orders.mesh",
	} {
		h := newHTTPApp(srv.URL, &config.Adapter{Host: mode, Concurrency: 1})
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		h.setHost(req, "orders.mesh")
		resp, err := h.direct.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("host %q: the application saw Host and X-Forwarded-Host %q, want %q", mode, body, want)
		}
		h.close()
	}
}
