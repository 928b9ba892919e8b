package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	_ "github.com/busmesh/busmesh/broker/kafka"
	_ "github.com/busmesh/busmesh/broker/nats"
	_ "github.com/busmesh/busmesh/broker/rabbitmq"
)

const callerConfig = `# caller side: the application calls the ambassador
id: {{id}}
broker: {{broker}}
admin: {{admin}}
log:
  level: debug
ambassador:
  service: caller
  http: {{http}}
  upstreams:
    {{service}}: {{port}}
  timeout: 5s
  max_body_bytes: 2MiB
`

const calleeConfig = `# callee side: the adapter calls the application
id: {{id}}
broker: {{broker}}
admin: {{admin}}
log:
  level: debug
adapter:
  service: {{service}}
  target: {{target}}
  max_body_bytes: 2MiB
`

var runID atomic.Int64

// unique returns a name no other run on a shared broker uses.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, runID.Add(1))
}

// httpMesh is a caller sidecar, a callee sidecar and the application behind
// it, on one broker.
type httpMesh struct {
	broker   brokerCase
	service  string
	caller   *sidecar
	callee   *sidecar
	shared   string // the ambassador's shared port
	port     string // the ambassador's port for service
	instance string
}

func startHTTPMesh(t *testing.T, b brokerCase, app http.Handler) *httpMesh {
	t.Helper()
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	m := &httpMesh{broker: b, service: unique("echo"), shared: freePort(t), port: freePort(t)}
	m.instance = unique("callee")
	m.callee = startSidecar(t, "callee", calleeConfig, map[string]string{
		"id": m.instance, "broker": b.url, "service": m.service, "target": srv.URL,
	})
	m.caller = startSidecar(t, "caller", callerConfig, map[string]string{
		"id": unique("caller"), "broker": b.url, "service": m.service, "http": m.shared, "port": m.port,
	})
	return m
}

// echoApp answers with what it received: method, path and query in
// headers, request headers named X-Test-* mirrored, repeated response
// headers, the body echoed. /status/N answers N; /slow sleeps.
func echoApp() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.PathValue("code"))
		w.Header().Set("X-App", "yes")
		w.WriteHeader(code)
		fmt.Fprintf(w, "app says %d", code)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "slow done")
	})
	mux.HandleFunc("/untyped", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // net/http would sniff one
		fmt.Fprint(w, "<html>no type named</html>")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Echo-Method", r.Method)
		h.Set("X-Echo-Path", r.URL.EscapedPath())
		h.Set("X-Echo-Query", r.URL.RawQuery)
		h.Set("X-Echo-Host", r.Header.Get("X-Forwarded-Host"))
		h.Set("X-Echo-Req-Host", r.Host)
		if ua, ok := r.Header["User-Agent"]; ok {
			h["X-Echo-User-Agent"] = ua
		}
		for name, values := range r.Header {
			if strings.HasPrefix(name, "X-Test-") {
				h["X-Mirror-"+strings.TrimPrefix(name, "X-Test-")] = values
			}
			if strings.HasPrefix(name, "X-Busmesh-") || name == "Connection" || name == "X-Hop" {
				h.Add("X-Leaked", name)
			}
		}
		h.Add("X-Multi", "one")
		h.Add("X-Multi", "two")
		if ct := r.Header.Get("Content-Type"); ct != "" {
			h.Set("Content-Type", ct)
		}
		// Read all before answering: an HTTP/1 server closes the request
		// body once the response starts.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
	return mux
}

func TestHTTP(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			m := startHTTPMesh(t, b, echoApp())
			t.Run("Methods", m.testMethods)
			t.Run("HostRouting", m.testHostRouting)
			t.Run("RepeatedHeaders", m.testRepeatedHeaders)
			t.Run("UserAgent", m.testUserAgent)
			t.Run("UntypedAnswer", m.testUntypedAnswer)
			t.Run("LargeBody", m.testLargeBody)
			t.Run("AppStatusPassesThrough", m.testAppStatus)
			t.Run("TooLarge", m.testTooLarge)
			t.Run("Limits", m.testLimits)
			t.Run("Timeout", m.testTimeout)
			t.Run("UnknownService", m.testUnknownService)
			t.Run("Garbage", m.testGarbage)
			t.Run("StoppedApp", func(t *testing.T) { testStoppedApp(t, b) })
			t.Run("KilledAdapter", func(t *testing.T) { testKilledAdapter(t, b) })
		})
	}
}

func do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL, err)
	}
	return resp, body
}

func newRequest(t *testing.T, method, url string, body []byte) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testCtx(t, 30*time.Second), method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func (m *httpMesh) testMethods(t *testing.T) {
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			var body []byte
			if method != "GET" {
				body = []byte(`{"method":"` + method + `"}`)
			}
			req := newRequest(t, method, "http://"+m.port+"/orders/7/a%20b?x=1&y=two%20words&x=3", body)
			req.Header.Set("Content-Type", "application/json")
			resp, got := do(t, req)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d, want 200; body %q", resp.StatusCode, got)
			}
			checks := map[string]string{
				"X-Echo-Method":      method,
				"X-Echo-Path":        "/orders/7/a%20b",
				"X-Echo-Query":       "x=1&y=two%20words&x=3",
				"X-Busmesh-Instance": m.instance,
				"Content-Type":       "application/json",
			}
			for h, want := range checks {
				if v := resp.Header.Get(h); v != want {
					t.Errorf("%s = %q, want %q", h, v, want)
				}
			}
			if !bytes.Equal(got, body) {
				t.Errorf("body = %q, want %q", got, body)
			}
			if leaked := resp.Header.Values("X-Leaked"); len(leaked) > 0 {
				t.Errorf("the app saw hop-by-hop or busmesh headers: %v", leaked)
			}
		})
	}
}

func (m *httpMesh) testHostRouting(t *testing.T) {
	for _, host := range []string{m.service, m.service + ".mesh", m.service + ".mesh:80"} {
		req := newRequest(t, "GET", "http://"+m.shared+"/where", nil)
		req.Host = host
		resp, body := do(t, req)
		if resp.StatusCode != 200 || resp.Header.Get("X-Echo-Path") != "/where" {
			t.Errorf("Host %q: status %d, path %q, body %q; want 200 from the service", host, resp.StatusCode, resp.Header.Get("X-Echo-Path"), body)
		}
		if got, gotHost := resp.Header.Get("X-Echo-Host"), resp.Header.Get("X-Echo-Req-Host"); got != host || gotHost != host {
			t.Errorf("Host %q: the app saw Host %q, X-Forwarded-Host %q; want the caller's in both", host, gotHost, got)
		}
	}
	req := newRequest(t, "GET", "http://"+m.shared+"/", nil)
	resp, _ := do(t, req) // Host is the ambassador's IP: no service
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Busmesh-Error") != "no-route" {
		t.Errorf("Host %q: status %d, X-Busmesh-Error %q; want 400 no-route", req.Host, resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))
	}
}

func (m *httpMesh) testRepeatedHeaders(t *testing.T) {
	req := newRequest(t, "GET", "http://"+m.port+"/h", nil)
	req.Header.Add("X-Test-Color", "red")
	req.Header.Add("X-Test-Color", "green")
	req.Header.Add("X-Test-Color", "blue, and more")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "must not pass")
	req.Header.Set("X-Busmesh-Timeout", "3s")
	resp, _ := do(t, req)
	if got, want := resp.Header.Values("X-Mirror-Color"), []string{"red", "green", "blue, and more"}; !slices.Equal(got, want) {
		t.Errorf("request header values at the app = %q, want %q", got, want)
	}
	if got, want := resp.Header.Values("X-Multi"), []string{"one", "two"}; !slices.Equal(got, want) {
		t.Errorf("repeated response header = %q, want %q", got, want)
	}
	if leaked := resp.Header.Values("X-Leaked"); len(leaked) > 0 {
		t.Errorf("the app saw hop-by-hop or busmesh headers: %v", leaked)
	}
}

// testUntypedAnswer: an answer the application sent without a
// Content-Type reaches the caller without one, as from a transparent
// proxy, whose caller may sniff it or not.
func (m *httpMesh) testUntypedAnswer(t *testing.T) {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}}
	defer h2c.CloseIdleConnections()
	for _, client := range []*http.Client{http.DefaultClient, h2c} {
		resp, err := client.Do(newRequest(t, "GET", "http://"+m.port+"/untyped", nil))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct, named := resp.Header["Content-Type"]; err != nil || resp.StatusCode != 200 || named || string(body) != "<html>no type named</html>" {
			t.Errorf("%s: status %d, Content-Type %q (present %v), body %q (%v); want 200, none, the app's body",
				resp.Proto, resp.StatusCode, ct, named, body, err)
		}
	}
}

// testUserAgent: the application sees the caller's User-Agent, and none
// when the caller sent none, as a transparent proxy passes it.
func (m *httpMesh) testUserAgent(t *testing.T) {
	for _, ua := range []string{"", "e2e-agent/1.0"} {
		req := newRequest(t, "GET", "http://"+m.port+"/ua", nil)
		req.Header.Set("User-Agent", ua) // empty: Go's client sends none
		resp, body := do(t, req)
		got, sent := resp.Header["X-Echo-User-Agent"]
		if resp.StatusCode != 200 || sent != (ua != "") || (sent && (len(got) != 1 || got[0] != ua)) {
			t.Errorf("caller's User-Agent %q: status %d, the app saw %q (present %v); body %q", ua, resp.StatusCode, got, sent, body)
		}
	}
}

func (m *httpMesh) testLargeBody(t *testing.T) {
	body := make([]byte, 1<<20)
	rand.Read(body)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			req := newRequest(t, "POST", "http://"+m.port+"/upload", body)
			if chunked {
				req.Body = io.NopCloser(bytes.NewReader(body)) // no length: chunked encoding
				req.ContentLength = -1
			}
			resp, got := do(t, req)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d, want 200; body %.200q", resp.StatusCode, got)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("1 MiB body came back with %d bytes, not byte-exact", len(got))
			}
		})
	}
}

func (m *httpMesh) testAppStatus(t *testing.T) {
	for _, code := range []int{201, 204, 302, 400, 404, 418, 500, 503} {
		resp, body := do(t, newRequest(t, "GET", "http://"+m.port+"/status/"+strconv.Itoa(code), nil))
		if resp.StatusCode != code {
			t.Errorf("app status %d arrived as %d", code, resp.StatusCode)
		}
		if e := resp.Header.Get("X-Busmesh-Error"); e != "" {
			t.Errorf("app status %d: X-Busmesh-Error %q, want none (the app answered)", code, e)
		}
		if resp.Header.Get("X-App") != "yes" {
			t.Errorf("app status %d: app header lost", code)
		}
		if want := fmt.Sprintf("app says %d", code); code != 204 && string(body) != want {
			t.Errorf("app status %d: body %q, want %q", code, body, want)
		}
	}
}

func (m *httpMesh) testTooLarge(t *testing.T) {
	body := make([]byte, 3<<20) // over the caller's max_body_bytes of 2 MiB
	for _, chunked := range []bool{false, true} {
		// The echo path reads the whole body before answering, as most
		// applications do; one that answers first gets its answer through.
		req := newRequest(t, "POST", "http://"+m.port+"/upload", body)
		if chunked {
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.ContentLength = -1
		}
		resp, got := do(t, req)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Busmesh-Error") != "request-too-large" {
			t.Errorf("chunked=%v: status %d, X-Busmesh-Error %q, body %.100q; want 413 request-too-large",
				chunked, resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), got)
		}
	}
}

// testLimits: what the adapter would refuse, the ambassador answers at
// once with the status HTTP has for it.
func (m *httpMesh) testLimits(t *testing.T) {
	many := newRequest(t, "GET", "http://"+m.port+"/many-headers", nil)
	for i := range 2000 {
		many.Header.Add(fmt.Sprintf("X-H%d", i), "v")
	}
	long := newRequest(t, "GET", "http://"+m.port+"/"+strings.Repeat("p", 100<<10), nil)
	for _, tt := range []struct {
		name   string
		req    *http.Request
		status int
		reason string
	}{
		{"2,000 headers", many, http.StatusRequestHeaderFieldsTooLarge, "headers-too-large"},
		{"a 100 KiB path", long, http.StatusRequestURITooLong, "uri-too-long"},
	} {
		start := time.Now()
		resp, body := do(t, tt.req)
		took := time.Since(start)
		if resp.StatusCode != tt.status || resp.Header.Get("X-Busmesh-Error") != tt.reason {
			t.Errorf("%s: %d %q %.100q; want %d %s", tt.name, resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body, tt.status, tt.reason)
		}
		if took > 2500*time.Millisecond { // the call's deadline is 5s; a busy machine takes a while
			t.Errorf("%s: answered after %v, want at once, not at the deadline", tt.name, took)
		}
	}
}

func (m *httpMesh) testTimeout(t *testing.T) {
	req := newRequest(t, "GET", "http://"+m.port+"/slow?d=3s", nil)
	req.Header.Set("X-Busmesh-Timeout", "200ms")
	start := time.Now()
	resp, body := do(t, req)
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Busmesh-Error") != "timeout" {
		t.Errorf("status %d, X-Busmesh-Error %q, body %q; want 504 timeout", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("answered after %v; want at the 200ms deadline, well before the app's 3s", took)
	}
	req = newRequest(t, "GET", "http://"+m.port+"/", nil)
	req.Header.Set("X-Busmesh-Timeout", "soon")
	if resp, _ := do(t, req); resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Busmesh-Error") != "bad-timeout" {
		t.Errorf("X-Busmesh-Timeout: soon gave %d %q, want 400 bad-timeout", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))
	}
}

func (m *httpMesh) testUnknownService(t *testing.T) {
	// The best of three, so a scheduling hiccup on a busy machine does not
	// decide: the point is "soon", not after the 5s call timeout.
	best := time.Hour
	for range 3 {
		req := newRequest(t, "GET", "http://"+m.shared+"/", nil)
		req.Host = unique("nosuch")
		start := time.Now()
		resp, body := do(t, req)
		best = min(best, time.Since(start))
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Busmesh-Error") != "no-healthy-instances" {
			t.Fatalf("status %d, X-Busmesh-Error %q, body %q; want 503 no-healthy-instances", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body)
		}
	}
	// The first call to a service no route names waits for discovery to
	// ask the service's instances, bounded (250ms when none answers).
	if best > 600*time.Millisecond {
		t.Errorf("503 for an unknown service took %v at best, want under 600ms", best)
	}
}

func (m *httpMesh) testGarbage(t *testing.T) {
	ctx := testCtx(t, 10*time.Second)
	b, err := broker.Open(ctx, m.broker.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	series := `busmesh_envelopes_rejected_total{component="adapter",reason="malformed"}`
	before := m.callee.metric(series)
	garbage := [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
		{},
		make([]byte, 100<<10),
	}
	for _, g := range garbage {
		if err := b.Publish(ctx, broker.NewSubjects("").Service(m.service), g); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the adapter to count the garbage", func() bool {
		return m.callee.metric(series) >= before+float64(len(garbage))
	})
	eventually(t, 5*time.Second, "the adapter to log the rejected envelopes", func() bool {
		return strings.Contains(m.callee.log.String(), `"msg":"envelope rejected"`)
	})
	resp, _ := do(t, newRequest(t, "GET", "http://"+m.port+"/after-garbage", nil))
	if resp.StatusCode != 200 {
		t.Errorf("after garbage, status %d; want 200: the adapter keeps serving", resp.StatusCode)
	}
}

func testStoppedApp(t *testing.T, b brokerCase) {
	app := httptest.NewServer(echoApp())
	m := &httpMesh{broker: b, service: unique("stopped"), port: freePort(t)}
	startSidecar(t, "callee-stopped", calleeConfig, map[string]string{
		"id": unique("callee"), "broker": b.url, "service": m.service, "target": app.URL,
	})
	startSidecar(t, "caller-stopped", callerConfig, map[string]string{
		"id": unique("caller"), "broker": b.url, "service": m.service, "http": freePort(t), "port": m.port,
	})
	if resp, _ := do(t, newRequest(t, "GET", "http://"+m.port+"/", nil)); resp.StatusCode != 200 {
		t.Fatalf("before stopping the app: status %d, want 200", resp.StatusCode)
	}
	app.Close()
	resp, body := do(t, newRequest(t, "GET", "http://"+m.port+"/", nil))
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Busmesh-Error") != "app-unreachable" {
		t.Errorf("status %d, X-Busmesh-Error %q, body %q; want 502 app-unreachable", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body)
	}
}

// testKilledAdapter kills an adapter without a goodbye. Until discovery
// forgets it (three announce intervals), a broker that reports unroutable
// messages answers no-responders at once; after, the ambassador answers
// no-healthy-instances without publishing.
func testKilledAdapter(t *testing.T, b brokerCase) {
	app := httptest.NewServer(echoApp())
	t.Cleanup(app.Close)
	service, port := unique("killed"), freePort(t)
	callee := startSidecar(t, "callee-killed", calleeConfig+"discovery:\n  interval: 1s\n", map[string]string{
		"id": unique("callee"), "broker": b.url, "service": service, "target": app.URL,
	})
	startSidecar(t, "caller-killed", callerConfig, map[string]string{
		"id": unique("caller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
	})
	if resp, _ := do(t, newRequest(t, "GET", "http://"+port+"/", nil)); resp.StatusCode != 200 {
		t.Fatalf("before the kill: status %d, want 200", resp.StatusCode)
	}
	callee.stop(syscall.SIGKILL)
	killed := time.Now()
	if b.returns {
		// Once the broker has seen the connection go (at once for NATS; a
		// request racing the kill may still go to RabbitMQ's queue and
		// time out), a request comes back unroutable, answered at once.
		var took time.Duration
		eventually(t, 2*time.Second, "503 no-responders", func() bool {
			req := newRequest(t, "GET", "http://"+port+"/", nil)
			req.Header.Set("X-Busmesh-Timeout", "300ms")
			start := time.Now()
			resp, _ := do(t, req)
			took = time.Since(start)
			return resp.Header.Get("X-Busmesh-Error") == "no-responders"
		})
		if took > 200*time.Millisecond {
			t.Errorf("no-responders took %v; want it at once, not at the 300ms deadline", took)
		}
	}
	eventually(t, 10*time.Second, "the killed instance to expire", func() bool {
		req := newRequest(t, "GET", "http://"+port+"/", nil)
		req.Header.Set("X-Busmesh-Timeout", "500ms")
		resp, _ := do(t, req)
		return resp.Header.Get("X-Busmesh-Error") == "no-healthy-instances"
	})
	// The TTL (three 1s intervals) runs from the last hello, which came up
	// to one interval before the kill.
	if took := time.Since(killed); took < 2*time.Second {
		t.Errorf("forgotten %v after the kill; want no earlier than its TTL allows", took)
	}
}
