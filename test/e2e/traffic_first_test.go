package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCanaryHeardAfterStable: on every broker, a call split to a version
// discovery has not heard yet, while another version is known, waits for
// it within the service's first hearing instead of falling back: an
// ambassador that starts before its canary's adapter sends the canary's
// share to the canary from its first call. A call routed to a version
// that never comes falls back after half its time, not at its deadline.
func TestCanaryHeardAfterStable(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			testCanaryHeardAfterStable(t, b)
		})
	}
}

func testCanaryHeardAfterStable(t *testing.T, b brokerCase) {
	service := unique("canary")
	callee := func(version string) {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, version)
		}))
		t.Cleanup(app.Close)
		startSidecar(t, "callee-"+version, versionedCalleeConfig, map[string]string{
			"id": unique(service + "-" + version), "broker": b.url, "service": service, "version": version, "target": app.URL,
		})
	}
	callee("v1")
	port, admin := freePort(t), freePort(t)
	file := filepath.Join(t.TempDir(), "caller.yaml")
	// A 10 s interval makes the caller's first hearing outlast a loaded
	// machine's start of the canary's sidecar.
	text := trafficCaller(b.url, unique("web"), admin, service, port, "queue", `      routes:
        - match: {headers: {x-version: "3"}}
          version: v3
      split: {v2: 100}
`) +
		"discovery:\n  interval: 10s\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	caller := runSidecar(t, binary, "caller", file, admin)
	client := &http.Client{}
	t.Cleanup(client.CloseIdleConnections)
	type answer struct {
		version string
		err     error
		took    time.Duration
	}
	first := make(chan answer, 1)
	go func() {
		start := time.Now()
		v, err := getter(client, port)()
		first <- answer{v, err, time.Since(start)}
	}()
	// v2's sidecar starts once the call waits (or has been answered,
	// which fails below).
	var got answer
	waiting := false
	for deadline := time.Now().Add(5 * time.Second); !waiting && got.took == 0 && time.Now().Before(deadline); {
		select {
		case got = <-first:
		case <-time.After(20 * time.Millisecond):
			waiting = caller.metric("busmesh_ambassador_inflight_requests") >= 1
		}
	}
	if got.took == 0 {
		if !waiting {
			t.Fatal("the first call was neither answered nor in flight within 5 s")
		}
		callee("v2")
		got = <-first
	}
	t.Logf("%s: the first call, sent before v2's sidecar started: %q %v in %v", b.name, got.version, got.err, got.took)
	if got.err != nil || got.version != "v2" {
		t.Errorf("the first call split to v2, sent before v2 was heard: %q, %v; want v2 (not v1, the fallback)", got.version, got.err)
	}

	// v3 never comes: within the hearing (10 s), a call with 2 s waits for
	// it 1 s, then falls back.
	start := time.Now()
	v, err := getter(client, port)("x-version", "3", "X-Busmesh-Timeout", "2s")
	took := time.Since(start)
	t.Logf("%s: a call routed to v3, which never comes: %q %v in %v", b.name, v, err, took)
	if err != nil || took < 800*time.Millisecond || took > 1800*time.Millisecond {
		t.Errorf("a 2 s call routed to a version never heard: %q, %v in %v; want the fallback's answer after about 1 s", v, err, took)
	}
}
