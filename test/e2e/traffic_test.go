package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const versionedCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  version: {{version}}
  target: {{target}}
`

// trafficCaller is the caller's config with a service's traffic rules.
func trafficCaller(broker, id, admin, service, port, lb, rules string) string {
	return fmt.Sprintf(`id: %s
broker: %s
admin: %s
ambassador:
  service: web
  upstreams:
    %s: %s
  timeout: 5s
  services:
    %s:
      lb: %s
%s`, id, broker, admin, service, port, service, lb, rules)
}

// TestTrafficSplit: canary and blue-green by config, on every broker, in
// queue and direct mode: a weighted split lands within 2 % of its weights,
// a header route always wins over the split, a sticky header keeps a user
// on one version, a mirror gets its share without the caller seeing its
// answers, and a change of the config file under load (blue to green)
// fails no call and moves every call within a second; a broken file keeps
// the routes in force.
func TestTrafficSplit(t *testing.T) {
	for _, b := range brokers(t) {
		for _, lb := range []string{"queue", "direct"} {
			t.Run(b.name+"/"+lb, func(t *testing.T) {
				t.Parallel()
				requireBroker(t, b)
				testTrafficSplit(t, b, lb)
			})
		}
	}
}

func testTrafficSplit(t *testing.T, b brokerCase, lb string) {
	service := unique("shop")
	var hits [2]atomic.Int64 // calls each version's application served
	for i, v := range []string{"v1", "v2"} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits[i].Add(1)
			io.WriteString(w, v)
		}))
		t.Cleanup(app.Close)
		startSidecar(t, "callee-"+v, versionedCalleeConfig, map[string]string{
			"id": unique("shop-" + v), "broker": b.url, "service": service, "version": v, "target": app.URL,
		})
	}
	port, admin := freePort(t), freePort(t)
	file := filepath.Join(t.TempDir(), "caller.yaml")
	write := func(rules string) {
		t.Helper()
		text := trafficCaller(b.url, unique("web"), admin, service, port, lb, rules)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`      routes:
        - match: {headers: {x-canary: "1"}}
          version: v2
      split: {v1: 90, v2: 10}
      sticky: x-user
`)
	caller := runSidecar(t, binary, "caller", file, admin)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	call := getter(client, port)
	// many makes n calls from 16 callers and counts the answers by version.
	many := func(n int, headers ...string) (map[string]int, int) {
		var mu sync.Mutex
		got, failed := map[string]int{}, 0
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					v, err := call(headers...)
					mu.Lock()
					if err != nil {
						failed++
						if failed < 3 {
							t.Logf("call failed: %v", err)
						}
					} else {
						got[v]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return got, failed
	}
	eventually(t, 10*time.Second, "both versions known", func() bool {
		v, err := call("x-canary", "1")
		return err == nil && v == "v2"
	})

	const n = 10000
	got, failed := many(n)
	share := float64(got["v2"]) / n
	t.Logf("%s/%s: split 90/10 over %d calls: v1 %d, v2 %d (%.1f%%), %d failed", b.name, lb, n, got["v1"], got["v2"], 100*share, failed)
	if math.Abs(share-0.10) > 0.02 || failed > 0 {
		t.Errorf("v2 got %.1f%% of the split's calls, want 10%% ± 2; %d failed", 100*share, failed)
	}
	if got, _ := many(200, "x-canary", "1"); got["v2"] != 200 {
		t.Errorf("header route: %v, want every call on v2", got)
	}
	for u := range 40 {
		user := fmt.Sprintf("user-%d", u)
		if got, _ := many(10, "x-user", user); len(got) != 1 {
			t.Errorf("sticky %s went to %v, want one version", user, got)
		}
	}

	// Mirror: every call answered by v1, a tenth copied to v2.
	before := [2]int64{hits[0].Load(), hits[1].Load()}
	write(`      split: {v1: 100}
      mirror: {version: v2, percent: 10}
`)
	waitReload(t, caller, 1)
	const m = 4000
	got, failed = many(m)
	if got["v1"] != m || failed > 0 {
		t.Errorf("with a mirror the caller saw %v and %d failures, want %d answers from v1", got, failed, m)
	}
	eventually(t, 5*time.Second, "the mirrored calls served", func() bool {
		return caller.metric(`busmesh_ambassador_mirror_answers_total{code="200"}`) >= float64(hits[1].Load()-before[1])*0.99
	})
	mirrored := float64(hits[1].Load()-before[1]) / m
	t.Logf("%s/%s: mirror 10%%: v2 served %.1f%% of %d calls as mirror", b.name, lb, 100*mirrored, m)
	if math.Abs(mirrored-0.10) > 0.02 {
		t.Errorf("the mirror got %.1f%% of the calls, want 10%% ± 2", 100*mirrored)
	}
	if d := caller.metric(`busmesh_ambassador_mirror_dropped_total`); d > 0 {
		t.Errorf("%v mirror copies dropped: %s", d, caller.grep("busmesh_ambassador_mirror_dropped_total"))
	}

	// Blue-green under load: 8 callers, the split moved to green mid-way.
	write(`      split: {v1: 100}
`)
	waitReload(t, caller, 2)
	var switched atomic.Int64 // unix nanoseconds of the reload
	var lateBlue, fails atomic.Int64
	stop := callers(8, func() {
		sent := time.Now().UnixNano()
		v, err := call()
		if err != nil {
			fails.Add(1)
			return
		}
		if sw := switched.Load(); sw != 0 && v == "v1" && sent > sw+int64(time.Second) {
			lateBlue.Add(1)
		}
	})
	time.Sleep(time.Second)
	write(`      split: {v2: 100}
`)
	waitReload(t, caller, 3)
	switched.Store(time.Now().UnixNano())
	time.Sleep(2 * time.Second)
	// A broken file: the routes in force stay, the error names the key.
	write(`      split: {v2: -5}
`)
	eventually(t, 5*time.Second, "the broken file refused", func() bool {
		return strings.Contains(caller.log.String(), "config reload refused") &&
			strings.Contains(caller.log.String(), "split.v2")
	})
	time.Sleep(500 * time.Millisecond)
	stop()
	if fails.Load() > 0 || lateBlue.Load() > 0 {
		t.Errorf("blue-green under load: %d calls failed, %d went to blue over 1s after the switch", fails.Load(), lateBlue.Load())
	}
	if v, err := call(); err != nil || v != "v2" {
		t.Errorf("after a broken file: %q, %v; want the routes in force (v2)", v, err)
	}
}

// waitReload waits for the sidecar's n-th "routes reloaded".
func waitReload(t *testing.T, s *sidecar, n int) {
	t.Helper()
	eventually(t, 5*time.Second, fmt.Sprintf("reload %d", n), func() bool {
		return strings.Count(s.log.String(), `"msg":"routes reloaded"`) >= n
	})
}

// getter returns a function that GETs / through the ambassador port with
// the given header pairs and returns the answer's body (the version that
// served it), or an error naming the status and X-Busmesh-Error.
func getter(client *http.Client, port string) func(headers ...string) (string, error) {
	return func(headers ...string) (string, error) {
		req, _ := http.NewRequest("GET", "http://"+port+"/", nil)
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d %s: %s", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body)
		}
		return string(body), nil
	}
}
