package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	cases := []struct {
		name, token, method, path, remote, auth string
		want                                    int
	}{
		{"metrics open off loopback", "", "GET", "/metrics", "10.0.0.9:5000", "", http.StatusTeapot},
		{"readyz open with a token set", "s3cret", "GET", "/readyz", "10.0.0.9:5000", "", http.StatusTeapot},
		{"reads open", "s3cret", "GET", "/v1/services", "10.0.0.9:5000", "", http.StatusTeapot},
		{"call from loopback, no token set", "", "POST", "/v1/call", "127.0.0.1:5000", "", http.StatusTeapot},
		{"call off loopback, no token set", "", "POST", "/v1/call", "10.0.0.9:5000", "", http.StatusUnauthorized},
		{"pprof off loopback, no token set", "", "GET", "/debug/pprof/", "10.0.0.9:5000", "", http.StatusUnauthorized},
		{"call without the token", "s3cret", "POST", "/v1/call", "127.0.0.1:5000", "", http.StatusUnauthorized},
		{"call with a wrong token", "s3cret", "POST", "/v1/call", "127.0.0.1:5000", "Bearer nope", http.StatusUnauthorized},
		{"call with the token", "s3cret", "POST", "/v1/call", "10.0.0.9:5000", "Bearer s3cret", http.StatusTeapot},
		{"pprof with the token", "s3cret", "GET", "/debug/pprof/heap", "10.0.0.9:5000", "Bearer s3cret", http.StatusTeapot},
		{"routes read off loopback", "", "GET", "/v1/routes", "10.0.0.9:5000", "", http.StatusTeapot},
		{"route change from loopback, no token set", "", "PUT", "/v1/routes/orders", "127.0.0.1:5000", "", http.StatusTeapot},
		{"route change off loopback, no token set", "", "PUT", "/v1/routes/orders", "10.0.0.9:5000", "", http.StatusUnauthorized},
		{"shift off loopback, no token set", "", "PATCH", "/v1/routes/orders", "10.0.0.9:5000", "", http.StatusUnauthorized},
		{"shift without the token", "s3cret", "PATCH", "/v1/routes/orders", "127.0.0.1:5000", "", http.StatusUnauthorized},
		{"shift with the token", "s3cret", "PATCH", "/v1/routes/orders", "10.0.0.9:5000", "Bearer s3cret", http.StatusTeapot},
		{"reset off loopback, no token set", "", "DELETE", "/v1/routes/orders", "10.0.0.9:5000", "", http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, c.path, nil)
			r.RemoteAddr = c.remote
			if c.auth != "" {
				r.Header.Set("Authorization", c.auth)
			}
			w := httptest.NewRecorder()
			guard(c.token, ok).ServeHTTP(w, r)
			if w.Code != c.want {
				t.Errorf("%s %s from %s = %d, want %d", c.method, c.path, c.remote, w.Code, c.want)
			}
		})
	}
}

func TestGuardGRPC(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, c := range []struct {
		path, auth string
		want       string // grpc-status; "" when passed through
	}{
		{"/busmesh.v1.Admin/ListServices", "", ""},
		{"/busmesh.v1.Admin/Call", "", "16"},
		{"/busmesh.v1.Admin/Call", "Bearer s3cret", ""},
		{"/busmesh.v1.Admin/ListRoutes", "", ""},
		{"/busmesh.v1.Admin/GetTraffic", "", ""},
		{"/busmesh.v1.Admin/SetTraffic", "", "16"},
		{"/busmesh.v1.Admin/ShiftTraffic", "", "16"},
		{"/busmesh.v1.Admin/ShiftTraffic", "Bearer s3cret", ""},
		{"/busmesh.v1.Admin/ResetTraffic", "", "16"},
	} {
		r := httptest.NewRequest("POST", c.path, nil)
		r.ProtoMajor = 2
		r.Header.Set("Content-Type", "application/grpc")
		r.RemoteAddr = "10.0.0.9:5000"
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		guard("s3cret", ok).ServeHTTP(w, r)
		if got := w.Header().Get("Grpc-Status"); got != c.want {
			t.Errorf("%s (%q): grpc-status %q, want %q", c.path, c.auth, got, c.want)
		}
	}
}
