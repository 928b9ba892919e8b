package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/test/testpb"
)

const monCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
discovery:
  interval: 500ms
ambassador:
  service: {{caller}}
  http: {{http}}
  grpc: {{grpc}}
  timeout: 10s
  services: # named, so discovery watches them from the start
    {{httpsvc}}:
      lb: queue
    {{rpcsvc}}:
      lb: queue
`

const monCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
discovery:
  interval: 500ms
adapter:
  service: {{service}}
  instance: {{instance}}
  target: {{target}}
`

// monMesh is a caller sidecar calling an HTTP service and a gRPC service,
// each behind a callee sidecar of its own, on one broker.
type monMesh struct {
	broker                        brokerCase
	caller, httpCallee, rpcCallee *sidecar
	callerName                    string
	httpService, rpcService       string
	httpInstance, rpcInstance     string
	http                          string
	rpc                           testpb.EchoClient
	appURL                        string // the HTTP service's application
}

func startMonMesh(t *testing.T, b brokerCase) *monMesh {
	t.Helper()
	app := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			w.WriteHeader(http.StatusInternalServerError)
		case "/slow":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
		default:
			io.WriteString(w, "ok")
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go app.Serve(httpLn)
	t.Cleanup(func() { app.Close() })
	echo := startEchoServer(t)

	m := &monMesh{broker: b, callerName: unique("mix-caller"), httpService: unique("mix-http"), rpcService: unique("mix-grpc"),
		http: freePort(t)}
	m.httpInstance, m.rpcInstance = m.httpService+"-1", m.rpcService+"-1"
	m.appURL = "http://" + httpLn.Addr().String()
	m.httpCallee = startSidecar(t, "mix-http-callee", monCalleeConfig, map[string]string{
		"id": unique("mhcallee"), "broker": b.url, "service": m.httpService, "instance": m.httpInstance,
		"target": "http://" + httpLn.Addr().String(),
	})
	m.rpcCallee = startSidecar(t, "mix-grpc-callee", monCalleeConfig, map[string]string{
		"id": unique("mgcallee"), "broker": b.url, "service": m.rpcService, "instance": m.rpcInstance,
		"target": "grpc://" + echo,
	})
	grpcAddr := freePort(t)
	m.caller = startSidecar(t, "mix-caller", monCallerConfig, map[string]string{
		"id": unique("mcaller"), "broker": b.url, "caller": m.callerName, "http": m.http, "grpc": grpcAddr,
		"httpsvc": m.httpService, "rpcsvc": m.rpcService,
	})
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(m.rpcService))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	m.rpc = testpb.NewEchoClient(conn)
	// Calls are counted from the first: wait until discovery knows both
	// services, so none is refused for want of an instance.
	eventually(t, 15*time.Second, "discovery of both services", func() bool {
		return m.caller.knows(m.httpService) && m.caller.knows(m.rpcService)
	})
	return m
}

// knows reports whether the sidecar's discovery has a healthy instance
// of service.
func (s *sidecar) knows(service string) bool {
	resp, err := http.Get("http://" + s.admin + "/v1/services?service=" + service)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var out struct {
		Services []struct {
			Healthy int `json:"healthy"`
		} `json:"services"`
	}
	return json.NewDecoder(resp.Body).Decode(&out) == nil && len(out.Services) == 1 && out.Services[0].Healthy > 0
}

func (m *monMesh) get(t *testing.T, path, timeout string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+m.http+path, nil)
	req.Host = m.httpService
	if timeout != "" {
		req.Header.Set("X-Busmesh-Timeout", timeout)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestGoldenMetrics drives a known mix through the mesh: 100 OK, 7
// application 500s, 3 timeouts and 2 gRPC DeadlineExceeded; the scraped
// counters and histogram counts of both sides equal it exactly, with the
// edge's labels. Then 10,000 calls naming random services add no series.
func TestGoldenMetrics(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			m := startMonMesh(t, b)
			t.Run("Mix", m.testMix)
			t.Run("Top", m.testTop)
			// Before RandomHosts, whose made-up hosts fill the bound of
			// services asked for (for a minute).
			t.Run("LearntService", m.testLearntService)
			t.Run("RandomHosts", m.testRandomHosts)
		})
	}
}

func (m *monMesh) testMix(t *testing.T) {
	for i := range 100 {
		if got := m.get(t, "/ok", ""); got != http.StatusOK {
			t.Fatalf("call %d: status %d, want 200", i, got)
		}
	}
	for range 7 {
		if got := m.get(t, "/fail", ""); got != http.StatusInternalServerError {
			t.Fatalf("status %d, want the app's 500", got)
		}
	}
	for range 3 {
		if got := m.get(t, "/slow", "200ms"); got != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504 (timeout)", got)
		}
	}
	for range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		_, err := m.rpc.Unary(ctx, &testpb.EchoRequest{Message: "slow", SleepMs: 2000})
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("slow Unary = %v, want DeadlineExceeded", err)
		}
	}

	system := m.broker.name
	edge := func(service, instance, protocol string) map[string]string {
		return map[string]string{"broker": system, "caller": m.callerName, "service": service, "instance": instance, "protocol": protocol}
	}
	with := func(l map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range l {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	// A timeout is answered by whichever side gives up first: the
	// ambassador (no instance answered) or the adapter (which names
	// itself), so its instance label is not checked.
	ambHTTP, ambRPC := edge(m.httpService, m.httpInstance, "http"), edge(m.rpcService, "", "grpc")
	ambTimeout := map[string]string{"broker": system, "caller": m.callerName, "service": m.httpService, "protocol": "http"}
	delete(ambRPC, "instance")
	adHTTP, adRPC := edge(m.httpService, m.httpInstance, "http"), edge(m.rpcService, m.rpcInstance, "grpc")
	type check struct {
		side   *sidecar
		metric string
		labels map[string]string
		want   float64
	}
	const (
		ambReq, ambDur = "busmesh_ambassador_requests_total", "busmesh_ambassador_request_duration_seconds"
		adReq, adDur   = "busmesh_adapter_requests_total", "busmesh_adapter_request_duration_seconds"
	)
	checks := []check{
		{m.caller, ambReq, with(ambHTTP, "class", "2xx", "code", "200", "grpc_code", ""), 100},
		{m.caller, ambReq, with(ambHTTP, "class", "5xx", "code", "500"), 7},
		{m.caller, ambReq, with(ambTimeout, "class", "5xx", "code", "504"), 3},
		{m.caller, ambReq, with(ambRPC, "class", "5xx", "code", "", "grpc_code", "DeadlineExceeded"), 2},
		{m.caller, ambReq, map[string]string{"caller": m.callerName}, 112},
		{m.caller, ambDur, ambTimeout, 110},
		{m.caller, ambDur, ambRPC, 2},
		{m.caller, "busmesh_ambassador_errors_total", map[string]string{"caller": m.callerName, "service": m.httpService, "reason": "timeout"}, 3},
		{m.caller, "busmesh_ambassador_errors_total", map[string]string{"caller": m.callerName, "service": m.rpcService, "reason": "timeout"}, 2},
		{m.caller, "busmesh_ambassador_inflight_requests", map[string]string{"caller": m.callerName}, 0},
		{m.httpCallee, adReq, with(adHTTP, "class", "2xx", "code", "200", "grpc_code", ""), 100},
		{m.httpCallee, adReq, with(adHTTP, "class", "5xx", "code", "500"), 7},
		{m.httpCallee, adReq, with(adHTTP, "class", "5xx", "code", "504"), 3},
		{m.httpCallee, adReq, map[string]string{}, 110},
		{m.httpCallee, adDur, adHTTP, 110},
		{m.rpcCallee, adReq, with(adRPC, "class", "5xx", "code", "", "grpc_code", "DeadlineExceeded"), 2},
		{m.rpcCallee, adReq, map[string]string{}, 2},
		{m.rpcCallee, adDur, adRPC, 2},
		{m.caller, "busmesh_broker_connected", map[string]string{"broker": system}, 1},
	}
	settled := func() bool {
		for _, c := range checks {
			if c.side.sum(c.metric, c.labels) != c.want {
				return false
			}
		}
		return true
	}
	// The adapters count a call as it ends there, a moment after its
	// caller had its answer.
	for deadline := time.Now().Add(10 * time.Second); !settled() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // nothing counted twice, late
	for _, c := range checks {
		if got := c.side.sum(c.metric, c.labels); got != c.want {
			t.Errorf("%s: %s%v = %v, want %v", c.side.name, c.metric, c.labels, got, c.want)
		}
	}
	if got := m.caller.sum("busmesh_build_info", nil); got != 1 {
		t.Errorf("busmesh_build_info = %v, want 1", got)
	}
	if got := m.caller.sum("busmesh_broker_messages_total", map[string]string{"operation": "publish"}); got < 112 {
		t.Errorf("broker publishes = %v, want at least the 112 requests", got)
	}
	if got := m.httpCallee.sum("busmesh_broker_messages_total", map[string]string{"operation": "receive"}); got < 110 {
		t.Errorf("broker receives at the callee = %v, want at least the 110 requests", got)
	}
}

// testTop: `busmesh top` and `busmesh stats` show the mix just driven,
// per service and per edge, over the recent window.
func (m *monMesh) testTop(t *testing.T) {
	out, err := exec.Command(binary, "top", "--once", "--admin", m.caller.admin).CombinedOutput()
	if err != nil {
		t.Fatalf("busmesh top: %v\n%s", err, out)
	}
	text := string(out)
	t.Logf("busmesh top --once:\n%s", text)
	edge := regexp.MustCompile(`(?m)^ambassador\s+` + regexp.QuoteMeta(m.callerName+" → "+m.httpService) +
		`\s+([0-9.]+)\s+([0-9.]+)%\s+(\S+)\s+(\S+)\s+0$`)
	match := edge.FindStringSubmatch(text)
	if match == nil {
		t.Fatalf("busmesh top shows no ambassador edge %s → %s with rate, success, p50, p99 and 0 in flight:\n%s",
			m.callerName, m.httpService, text)
	}
	if match[1] == "0" || match[3] == "-" || match[4] == "-" {
		t.Errorf("busmesh top edge line %q: want a rate and latencies", match[0])
	}
	if !regexp.MustCompile(`(?m)^adapter\s+` + regexp.QuoteMeta(m.rpcService) + `\s`).MatchString(
		string(mustRun(t, "top", "--once", "--admin", m.rpcCallee.admin))) {
		t.Errorf("busmesh top on the gRPC callee shows no adapter row for %s", m.rpcService)
	}
	stats := string(mustRun(t, "stats", "--admin", m.caller.admin))
	t.Logf("busmesh stats:\n%s", stats)
	if !strings.Contains(stats, "REQ/S (10s)") || !strings.Contains(stats, "SUCCESS (10s)") {
		t.Errorf("busmesh stats shows no windowed rates:\n%s", stats)
	}
	if !regexp.MustCompile(`(?m)^ambassador\s+` + regexp.QuoteMeta(m.httpService) + `\s+110\s+200=100 500=7 504=3\s`).MatchString(stats) {
		t.Errorf("busmesh stats: want %s with 110 requests, 200=100 500=7 504=3:\n%s", m.httpService, stats)
	}
}

func mustRun(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("busmesh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// testLearntService: the first call to a service no route names, routed
// by its Host, is counted under that service, not under "unknown": the
// ambassador learns the service on that call and moves it to the
// service's edge.
func (m *monMesh) testLearntService(t *testing.T) {
	unknown := map[string]string{"service": "unknown"}
	var service string
	var before float64
	for attempt := 1; ; attempt++ {
		service = unique("mix-learnt")
		startSidecar(t, "learnt-callee", monCalleeConfig, map[string]string{
			"id": unique("mlcallee"), "broker": m.broker.url, "service": service, "instance": service + "-1", "target": m.appURL,
		})
		before = m.caller.sum("busmesh_ambassador_requests_total", unknown)
		req, _ := http.NewRequest(http.MethodGet, "http://"+m.http+"/ok", nil)
		req.Host = service
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		why := resp.Header.Get("X-Busmesh-Error")
		if resp.StatusCode == http.StatusServiceUnavailable && why == "no-healthy-instances" && attempt < 3 {
			// The new adapter did not answer the caller's ask within its
			// 250 ms (a loaded machine): this call rightly counts as
			// unknown. Again with a service of its own, once it is counted.
			t.Logf("first call to %s: 503 no-healthy-instances, the adapter answered the ask too late; again with a new service", service)
			if !waitFor(5*time.Second, func() bool { return m.caller.sum("busmesh_ambassador_requests_total", unknown) > before }) {
				t.Fatalf("the 503 to %s was not counted under service=\"unknown\" within 5s", service)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("first call to %s: status %d (%s), want 200", service, resp.StatusCode, why)
		}
		break
	}
	counted := func() bool {
		return m.caller.sum("busmesh_ambassador_requests_total", map[string]string{"service": service}) == 1
	}
	if !waitFor(5*time.Second, counted) {
		t.Errorf("requests_total{service=%q} = %v, want 1", service,
			m.caller.sum("busmesh_ambassador_requests_total", map[string]string{"service": service}))
	}
	if got := m.caller.sum("busmesh_ambassador_requests_total", unknown) - before; got != 0 {
		t.Errorf("the first call to %s was counted under service=\"unknown\" too (%v)", service, got)
	}
	for _, svc := range []string{"unknown", service} {
		inflight := func() float64 {
			return m.caller.sum("busmesh_ambassador_inflight_requests", map[string]string{"service": svc})
		}
		if !waitFor(5*time.Second, func() bool { return inflight() == 0 }) {
			t.Errorf("inflight_requests{service=%q} = %v after the call, want 0", svc, inflight())
		}
	}
}

// testRandomHosts: calls whose Host names a service nobody announced and
// the config does not name are counted under one unknown service: 10,000
// of them add no series.
func (m *monMesh) testRandomHosts(t *testing.T) {
	call := func(host string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+m.http+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("GET with Host %s: %v", host, err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	call("nobody-here")
	call("not a service!")
	families := []string{"busmesh_ambassador_requests_total", "busmesh_ambassador_request_duration_seconds",
		"busmesh_ambassador_errors_total", "busmesh_ambassador_inflight_requests"}
	before := map[string]int{}
	for _, f := range families {
		before[f] = m.caller.series(f)
	}
	unknownBefore := m.caller.sum("busmesh_ambassador_requests_total", map[string]string{"service": "unknown"})
	const n, workers = 10000, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				call(fmt.Sprintf("svc-%d-%x", i, rand.Uint64()))
			}
		})
	}
	wg.Wait()
	for _, f := range families {
		if got := m.caller.series(f); got != before[f] {
			t.Errorf("%s: %d series after %d calls naming random services, want %d (no new series)", f, got, n, before[f])
		}
	}
	if got := m.caller.sum("busmesh_ambassador_requests_total", map[string]string{"service": "unknown"}) - unknownBefore; got != n {
		t.Errorf("calls counted under service=\"unknown\": %v, want %d", got, n)
	}
	body := m.caller.metricsText()
	if strings.Contains(body, "svc-1-") {
		t.Errorf("a random service name became a label value")
	}
}

// metricsText returns the sidecar's /metrics as text.
func (s *sidecar) metricsText() string {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// natscli returns the path of the NATS CLI, skipping the test without it.
func natscli(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "nats")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := "no NATS CLI: go install github.com/nats-io/natscli/nats@v0.5.0 (adapter.TestNATSServices checks the protocol without it)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; .ci/run installs it") // in CI a missing tool is a failure, not a skip
	}
	t.Skip(msg)
	return ""
}

// TestNATSMicro: `nats micro ls`, `info` and `stats` list a running
// busmesh service, with the calls it served.
func TestNATSMicro(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	cli := natscli(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(app.Close)
	service := unique("micro")
	instance := service + "-1"
	startSidecar(t, "micro-callee", monCalleeConfig, map[string]string{
		"id": unique("micallee"), "broker": b.url, "service": service, "instance": instance, "target": app.URL,
	})
	m := &monMesh{http: freePort(t), httpService: service}
	m.caller = startSidecar(t, "micro-caller", monCallerConfig, map[string]string{
		"id": unique("micaller"), "broker": b.url, "caller": "web", "http": m.http, "grpc": freePort(t),
		"httpsvc": service, "rpcsvc": unique("none"),
	})
	eventually(t, 15*time.Second, "discovery of the service", func() bool { return m.caller.knows(service) })
	for _, path := range []string{"/a", "/b", "/fail"} {
		m.get(t, path, "")
	}
	nats := func(args ...string) string {
		out, err := exec.Command(cli, append([]string{"--server", b.url}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("nats %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	// The CLI leaves a version out when it equals the row above's (another
	// test's service listed first, at 0.0.0 too).
	if out := nats("micro", "ls"); !regexp.MustCompile(`│ ` + regexp.QuoteMeta(service) + `\s+│ (0\.0\.0)?\s+│ ` + regexp.QuoteMeta(instance)).MatchString(out) {
		t.Errorf("nats micro ls does not list %s (%s)", service, instance)
	}
	if out := nats("micro", "info", service); !strings.Contains(out, "Subject: busmesh.default.svc."+service) {
		t.Errorf("nats micro info %s shows no endpoint on the service's subject", service)
	}
	out := nats("micro", "stats", service, "--json")
	var stats []struct {
		Name      string `json:"name"`
		ID        string `json:"id"`
		Endpoints []struct {
			Requests  int    `json:"num_requests"`
			Errors    int    `json:"num_errors"`
			LastError string `json:"last_error"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatalf("nats micro stats --json: %v", err)
	}
	// The failed GET is retried (twice, by default): two successes, and
	// every other request a 503.
	if len(stats) != 1 || stats[0].ID != instance || len(stats[0].Endpoints) != 1 ||
		stats[0].Endpoints[0].Requests-stats[0].Endpoints[0].Errors != 2 || stats[0].Endpoints[0].Errors < 1 ||
		stats[0].Endpoints[0].LastError != "503" {
		t.Errorf("nats micro stats = %+v, want %s with 2 requests served and the rest 503", stats, instance)
	}
}
