package ambassador

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

func TestSizedNow(t *testing.T) {
	get := func(major int) *http.Request {
		return &http.Request{Method: http.MethodGet, ProtoMajor: major}
	}
	head := &http.Request{Method: http.MethodHead, ProtoMajor: 1}
	cases := []struct {
		name   string
		r      *http.Request
		status int
		header http.Header
		n      int
		want   bool
		wantCL string // the Content-Length after the call
	}{
		{"no length: set", get(1), 200, http.Header{}, 5, true, "5"},
		{"the same length", get(1), 200, http.Header{"Content-Length": {"5"}}, 5, true, "5"},
		{"empty body", get(1), 200, http.Header{}, 0, true, "0"},
		{"another length: left to net/http", get(1), 200, http.Header{"Content-Length": {"9"}}, 5, false, "9"},
		{"an invalid length", get(1), 200, http.Header{"Content-Length": {"x"}}, 5, false, "x"},
		{"HTTP/2", get(2), 200, http.Header{}, 5, false, ""},
		{"HEAD", head, 200, http.Header{}, 0, false, ""},
		{"a negative length", get(1), 200, http.Header{"Content-Length": {"-1"}}, 5, false, "-1"},
		{"205", get(1), 205, http.Header{}, 0, true, "0"},
		{"204", get(1), 204, http.Header{}, 0, false, ""},
		{"304", get(1), 304, http.Header{}, 0, false, ""},
		{"a 1xx", get(1), 103, http.Header{}, 0, false, ""},
		{"no request (an upgrade's refusal)", nil, 200, http.Header{}, 5, false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := sizedNow(tc.r, tc.status, tc.header, tc.n); got != tc.want {
				t.Errorf("sizedNow = %v, want %v", got, tc.want)
			}
			if got := tc.header.Get("Content-Length"); got != tc.wantCL {
				t.Errorf("Content-Length %q, want %q", got, tc.wantCL)
			}
		})
	}
}

// TestAnswerAfterSettle: a whole answer reaches an HTTP/1.1 caller early,
// but never before its call gave back what gates the next call. With
// max_concurrent 1 and no queue, a caller that sends its calls one after
// another, each on a new connection, is never refused.
func TestAnswerAfterSettle(t *testing.T) {
	sb := &scriptBroker{script: func(int, *envelope.Request) scripted { return scripted{resp: ok200()} }}
	cfg := config.NewAmbassador()
	cfg.Timeout = config.Duration(5 * time.Second)
	brk := config.NewServiceBreaker()
	brk.MaxConcurrent, brk.MaxPending = 1, 0
	cfg.Services = map[string]*config.ServicePolicy{"orders": {Breaker: brk}}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler("orders"))
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 200 {
		resp, err := client.Get(srv.URL + "/x")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s, _ := a.services.Load("orders")
		if held := len(s.(*serviceState).slots); held != 0 || resp.StatusCode != 200 {
			t.Fatalf("call %d: status %d (%s), %d slot(s) still held once the caller had the answer",
				i, resp.StatusCode, resp.Header.Get(HeaderError), held)
		}
		if resp.ContentLength < 0 {
			t.Fatalf("call %d: no Content-Length", i)
		}
	}
}
