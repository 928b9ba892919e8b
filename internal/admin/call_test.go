package admin_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/busmesh/busmesh/internal/admin"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// startCaller is an admin port whose Call goes to h: through a reverse
// proxy to a real HTTP server, as the ambassador's shared port would.
func startCaller(t *testing.T, h http.Handler) (*admin.Server, busmeshv1.AdminClient) {
	t.Helper()
	app := httptest.NewServer(h)
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	s := startAdmin(t)
	s.SetSidecar(admin.Sidecar{Calls: httputil.NewSingleHostReverseProxy(u)})
	conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, busmeshv1.NewAdminClient(conn)
}

// TestCallAnswerCapped: an answer larger than a gRPC message can carry
// fails the call at once with ResourceExhausted, over gRPC and JSON, and
// neither the sidecar's memory nor what it reads from the application
// grows with the answer.
func TestCallAnswerCapped(t *testing.T) {
	const size = 64 << 20
	var sent atomic.Int64
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	s, client := startCaller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
			w.(http.Flusher).Flush()
		}
	}))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := client.Call(t.Context(), &busmeshv1.CallRequest{Service: "big", Path: "/download",
		Timeout: durationpb.New(time.Minute)})
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if took > 10*time.Second {
		t.Errorf("the call failed after %v, want at once", took)
	}
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%v: heap in use grown by %d MiB, %d MiB sent by the application: %v",
		took, grown>>20, sent.Load()>>20, err)
	if grown > 24<<20 {
		t.Errorf("heap in use grown by %d MiB for a %d MiB answer: the answer is held", grown>>20, size>>20)
	}
	// What the application wrote is at most the cap plus what the
	// connection's buffers took before the call was cancelled.
	time.Sleep(100 * time.Millisecond)
	if n := sent.Load(); n > 24<<20 {
		t.Errorf("the application wrote %d MiB of the answer, want the call cancelled near %d MiB", n>>20, admin.MaxCallAnswer>>20)
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "curl") {
		t.Errorf("call of a %d MiB answer: %v, want ResourceExhausted naming curl", size>>20, err)
	}

	// The JSON mapping of the same call.
	resp, err := http.Post("http://"+s.Addr()+"/v1/call", "application/json",
		strings.NewReader(`{"service":"big","path":"/download"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Code int }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusTooManyRequests || out.Code != int(codes.ResourceExhausted) {
		t.Errorf("POST /v1/call of a %d MiB answer: %d %+v, want 429 and ResourceExhausted", size>>20, resp.StatusCode, out)
	}
}

// TestCallKeepsTimeoutHeader: an X-Busmesh-Timeout among the caller's
// headers (busmesh call -H) reaches the ambassador as given; the timeout
// field sets it only when the headers do not.
func TestCallKeepsTimeoutHeader(t *testing.T) {
	_, client := startCaller(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.Header.Get("X-Busmesh-Timeout")))
	}))
	for _, tc := range []struct {
		headers map[string]string
		want    string
	}{
		{nil, "1s"},
		{map[string]string{"X-Busmesh-Timeout": "2s"}, "2s"},
		{map[string]string{"x-busmesh-timeout": "250ms"}, "250ms"},
	} {
		resp, err := client.Call(t.Context(), &busmeshv1.CallRequest{Service: "echo", Path: "/",
			Headers: tc.headers, Timeout: durationpb.New(time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Body); got != tc.want {
			t.Errorf("headers %v, timeout 1s: the ambassador got X-Busmesh-Timeout %q, want %q", tc.headers, got, tc.want)
		}
	}
}
