package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

const connLimitCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: caller
  upstreams:
    {{service}}: {{port}}
  max_connections: 100
`

// TestConnectionLimit: connections opened and left idle cannot lock a
// caller out, nor take the ambassador's memory: at max_connections a new
// connection takes the place of the longest idle one.
func TestConnectionLimit(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	m := startHTTPMesh(t, b, echoApp())
	port := freePort(t)
	caller := startSidecar(t, "caller", connLimitCallerConfig, map[string]string{
		"id": unique("caller"), "broker": b.url, "service": m.service, "port": port,
	})
	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	for range 2000 {
		c, err := net.Dial("tcp", port)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		idle = append(idle, c)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 20 {
		resp, err := client.Get("http://" + port + "/after-flood")
		if err != nil {
			t.Fatalf("call %d after 2,000 idle connections: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("call %d after 2,000 idle connections: status %d", i, resp.StatusCode)
		}
	}
	eventually(t, 5*time.Second, "idle connections evicted and counted", func() bool {
		return caller.metric(`busmesh_ambassador_connections_closed_total{listener="`+port+`",reason="evicted-idle"}`) >= 1900
	})
	if rss := rssMB(t, caller.cmd.Process.Pid); rss > 100 {
		t.Errorf("ambassador RSS %d MB after 2,000 idle connections, want under 100", rss)
	}
}

// rssMB is a process's resident set size in MB.
func rssMB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return kb / 1024
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
