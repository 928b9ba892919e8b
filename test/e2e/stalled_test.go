package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"
)

const stalledCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: reader
  upstreams:
    {{service}}: {{port}}
  timeout: 60s
`

const stalledCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  target: {{target}}
`

// TestStalledReaders: 50 callers ask for 32 MiB answers and stop reading
// after the head. The sidecars' memory stays bounded (each stalled stream
// holds its window, not its body), another caller is served meanwhile, and
// the memory is given back after the readers leave.
func TestStalledReaders(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			testStalledReaders(t, b)
		})
	}
}

func testStalledReaders(t *testing.T, b brokerCase) {
	const readers, size = 50, 32 << 20
	chunk := make([]byte, 64<<10)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/big" {
			fmt.Fprint(w, "small")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(app.Close)
	service, port := unique("stall"), freePort(t)
	// The plain binary: the race detector multiplies memory 5–10×.
	callee := startSidecarWith(t, plainBinary, "callee", stalledCalleeConfig, map[string]string{
		"id": unique("callee"), "broker": b.url, "service": service, "target": app.URL})
	caller := startSidecarWith(t, plainBinary, "caller", stalledCallerConfig, map[string]string{
		"id": unique("caller"), "broker": b.url, "service": service, "port": port})
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range readers {
		c, err := net.Dial("tcp", port)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		// A small receive buffer, so the stall reaches the sidecars
		// instead of the kernel's buffers.
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: %s\r\n\r\n", service)
		resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
		if err != nil {
			t.Fatalf("reader %d: %v", i, err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("reader %d: status %d", i, resp.StatusCode)
		}
	}
	time.Sleep(3 * time.Second) // the streams fill their windows and stall
	if dir := os.Getenv("STALL_PPROF"); dir != "" {
		for name, sc := range map[string]*sidecar{"caller": caller, "callee": callee} {
			r, err := http.Get("http://" + sc.admin + "/debug/pprof/heap")
			if err == nil {
				data, _ := io.ReadAll(r.Body)
				os.WriteFile(dir+"/"+b.name+"-"+name+".heap", data, 0o644)
				r.Body.Close()
			}
		}
	}
	callerRSS, calleeRSS := rssMB(t, caller.cmd.Process.Pid), rssMB(t, callee.cmd.Process.Pid)
	t.Logf("%s: %d readers of %d MiB stalled: RSS caller %d MB, callee %d MB", b.name, readers, size>>20, callerRSS, calleeRSS)
	resp, err := http.Get("http://" + port + "/small")
	if err != nil {
		t.Fatalf("another caller, during the stall: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "small" {
		t.Errorf("another caller, during the stall: %d %q", resp.StatusCode, body)
	}
	for _, rss := range []int{callerRSS, calleeRSS} {
		if rss > 64 {
			t.Errorf("RSS %d MB with %d stalled readers, want at most 64 (caller %d, callee %d)", rss, readers, callerRSS, calleeRSS)
			break
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	eventually(t, 10*time.Second, "the streams of the readers that left end", func() bool {
		return callee.metric(`busmesh_adapter_inflight{service="`+service+`"}`) == 0
	})
	time.Sleep(time.Second)
	callerRSS, calleeRSS = rssMB(t, caller.cmd.Process.Pid), rssMB(t, callee.cmd.Process.Pid)
	t.Logf("%s: after the readers left: RSS caller %d MB, callee %d MB", b.name, callerRSS, calleeRSS)
	if callerRSS > 64 || calleeRSS > 64 {
		t.Errorf("RSS after the readers left: caller %d MB, callee %d MB, want at most 64", callerRSS, calleeRSS)
	}
}
