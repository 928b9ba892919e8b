package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
)

// startCallMesh runs a sidecar in this process, on the shared NATS at
// 127.0.0.1:4222 in a mesh of its own: an adapter serving app as service
// "app", and an ambassador that calls it. It returns the admin address
// once the ambassador knows a healthy instance of app.
func startCallMesh(t *testing.T, app http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	cfg := config.Default()
	cfg.ID = fmt.Sprintf("calltest-%d", time.Now().UnixNano())
	cfg.Mesh = cfg.ID // subjects of its own on the shared broker
	cfg.Broker = "nats://127.0.0.1:4222"
	cfg.Admin = "127.0.0.1:0"
	cfg.Ambassador = config.NewAmbassador()
	cfg.Ambassador.Service = "cli"
	cfg.Ambassador.HTTP = "127.0.0.1:0"
	cfg.Adapter = config.NewAdapter()
	cfg.Adapter.Service = "app"
	cfg.Adapter.Target = srv.URL
	cfg.Normalize()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sc, err := startSidecar(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.shutdown() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if in := sc.registry.Instances("app"); len(in) > 0 && in[0].Healthy {
			return sc.admin.Addr()
		}
		if time.Now().After(deadline) {
			t.Fatal("the ambassador does not know a healthy instance of app after 10s")
		}
	}
}

// runCall runs busmesh call with args and returns its exit status and
// what it printed, error included.
func runCall(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(append([]string{"call"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	if err == nil {
		return exitOK, out.String()
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code, out.String() + err.Error()
	}
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage, out.String() + err.Error()
	}
	return exitFailed, out.String() + err.Error()
}

// hang answers when the call is given up.
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// TestCallMeshTimeoutExit: a call to a service that does not answer ends
// with the mesh's 504 timeout and exit status 3 every time, not with the
// CLI's own deadline (exit status 1, "did not answer within").
func TestCallMeshTimeoutExit(t *testing.T) {
	addr := startCallMesh(t, http.HandlerFunc(hang))
	for i := range 5 {
		start := time.Now()
		code, out := runCall(t, "--admin", addr, "--timeout", "1s", "app", "/hang")
		if code != exitMeshError || !strings.Contains(out, "504 timeout") {
			t.Errorf("run %d after %v: exit status %d, want %d (the mesh's 504 timeout):\n%s", i, time.Since(start), code, exitMeshError, out)
		}
	}
}

// TestCallTimeoutHeaderKept: -H 'X-Busmesh-Timeout: 3s' sets the call's
// deadline over --timeout, and busmesh waits for it.
func TestCallTimeoutHeaderKept(t *testing.T) {
	addr := startCallMesh(t, http.HandlerFunc(hang))
	start := time.Now()
	code, out := runCall(t, "--admin", addr, "--timeout", "1s", "-H", "X-Busmesh-Timeout: 3s", "app", "/hang")
	took := time.Since(start)
	if code != exitMeshError || !strings.Contains(out, "504 timeout") {
		t.Errorf("exit status %d after %v, want %d (the mesh's 504 timeout):\n%s", code, took, exitMeshError, out)
	}
	if took < 3*time.Second {
		t.Errorf("the call ended after %v, before the header's 3s:\n%s", took, out)
	}
}

// TestCallLargeAnswer: an answer larger than the admin API returns fails
// at once, exit status 1 with a way to fetch it, and the sidecar stops
// reading it from the application.
func TestCallLargeAnswer(t *testing.T) {
	const size = 64 << 20
	var sent atomic.Int64
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	addr := startCallMesh(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			hang(w, r)
			return
		}
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			sent.Add(int64(len(chunk)))
		}
	}))
	start := time.Now()
	code, out := runCall(t, "--admin", addr, "--timeout", "30s", "app", "/download")
	took := time.Since(start)
	if code != exitFailed || !strings.Contains(out, "ResourceExhausted") || !strings.Contains(out, "curl -H 'Host: app' http://127.0.0.1:") {
		t.Errorf("exit status %d after %v, want %d naming curl:\n%.2000s", code, took, exitFailed, out)
	}
	if took > 15*time.Second {
		t.Errorf("the call failed after %v, want at once", took)
	}
	time.Sleep(500 * time.Millisecond) // for the cancel to reach the adapter
	t.Logf("%v, %d MiB written by the application: %s", took, sent.Load()>>20, out)
	if n := sent.Load(); n > 32<<20 {
		t.Errorf("the application wrote %d MiB of a %d MiB answer: the call was not cancelled", n>>20, size>>20)
	}
	// The sidecar still serves.
	if code, out := runCall(t, "--admin", addr, "--timeout", "1s", "app", "/hang"); code != exitMeshError {
		t.Errorf("a call after: exit status %d, want %d:\n%s", code, exitMeshError, out)
	}
}

// TestCallAbortedAfterStatus: an answer that breaks off after its status
// (its deadline passes mid-body) fails the call; the sidecar, which the
// ambassador's abort would otherwise end, still serves.
func TestCallAbortedAfterStatus(t *testing.T) {
	addr := startCallMesh(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			w.Write([]byte("ok"))
			return
		}
		w.Write([]byte("partial"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	code, out := runCall(t, "--admin", addr, "--timeout", "1s", "app", "/partial")
	if code != exitFailed || !strings.Contains(out, "broke off") {
		t.Errorf("exit status %d, want %d (broke off):\n%s", code, exitFailed, out)
	}
	if code, out := runCall(t, "--admin", addr, "--timeout", "5s", "app", "/ok"); code != exitOK {
		t.Errorf("a call after: exit status %d, want %d:\n%s", code, exitOK, out)
	}
}
