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
	"github.com/busmesh/busmesh/internal/envelope"
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
		h := newHTTPApp(srv.URL, nil, &config.Adapter{Host: mode, Concurrency: 1})
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

// TestAppHeader: the application gets the caller's User-Agent, and none
// when the caller sent none (net/http would write Go-http-client/1.1), as
// a transparent proxy passes it; the trace context goes with the call.
func TestAppHeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []string
		want    string // the User-Agent line written, "" for none
	}{
		{"none", []string{"Accept", "*/*"}, ""},
		{"caller's", []string{"User-Agent", "curl/8.5.0"}, "User-Agent: curl/8.5.0\r\n"},
		{"empty", []string{"User-Agent", ""}, ""},
	} {
		req := &envelope.Request{Headers: tc.headers, TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v"}
		httpReq, _ := http.NewRequest("GET", "http://app/x", nil)
		httpReq.Header = appHeader(req)
		var out strings.Builder
		if err := httpReq.Write(&out); err != nil {
			t.Fatal(err)
		}
		head := out.String()
		got := ""
		if i := strings.Index(head, "User-Agent:"); i >= 0 {
			got = head[i : i+strings.Index(head[i:], "\r\n")+2]
		}
		if got != tc.want {
			t.Errorf("%s: User-Agent line %q, want %q; request:\n%s", tc.name, got, tc.want, head)
		}
		if !strings.Contains(head, "Traceparent: "+req.TraceParent+"\r\n") || !strings.Contains(head, "Tracestate: k=v\r\n") {
			t.Errorf("%s: no trace context in the request:\n%s", tc.name, head)
		}
	}
	// The empty value is shared: adding to one call's header must copy
	// it, which a capacity of 1 makes append do.
	appHeader(&envelope.Request{}).Add("User-Agent", "other")
	if cap(noUserAgent) != 1 || noUserAgent[0] != "" {
		t.Errorf("the shared empty User-Agent is %q with capacity %d, want \"\" with 1", noUserAgent, cap(noUserAgent))
	}
}
