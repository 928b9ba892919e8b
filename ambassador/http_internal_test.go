package ambassador

import (
	"net/http"
	"testing"
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
		{"HEAD", head, 200, http.Header{"Content-Length": {"9"}}, 0, false, "9"},
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
