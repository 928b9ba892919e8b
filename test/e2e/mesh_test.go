package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

const meshCallerConfig = `id: {{id}}
mesh: {{mesh}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: caller
  upstreams:
    {{service}}: {{port}}
  timeout: 5s
`

const meshCalleeConfig = `id: {{id}}
mesh: {{mesh}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  instance: {{instance}}
  target: {{target}}
`

// TestMeshIsolation runs two meshes on one broker, each with a service of
// the same name and an instance of the same name: each ambassador reaches
// its own mesh's instance only, knows only its own mesh's instances, and a
// mesh whose instance stops answers no-healthy-instances instead of
// borrowing the other mesh's.
func TestMeshIsolation(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			service, instance := unique("iso"), unique("inst")
			type mesh struct {
				name           string
				caller, callee *sidecar
				port, sidecar  string
			}
			var meshes []*mesh
			for _, name := range []string{unique("blue"), unique("green")} {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					io.WriteString(w, name)
				}))
				t.Cleanup(srv.Close)
				m := &mesh{name: name, port: freePort(t), sidecar: unique("callee")}
				m.callee = startSidecar(t, "callee-"+name, meshCalleeConfig, map[string]string{
					"id": m.sidecar, "mesh": name, "broker": b.url, "service": service,
					"instance": instance, "target": srv.URL,
				})
				m.caller = startSidecar(t, "caller-"+name, meshCallerConfig, map[string]string{
					"id": unique("caller"), "mesh": name, "broker": b.url, "service": service, "port": m.port,
				})
				meshes = append(meshes, m)
			}
			get := func(m *mesh) (int, string, string) {
				resp, err := http.Get("http://" + m.port + "/")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body), resp.Header.Get("X-Busmesh-Error")
			}
			for _, m := range meshes {
				for range 20 {
					if code, body, _ := get(m); code != 200 || body != m.name {
						t.Fatalf("mesh %s: GET = %d %q, want 200 %q", m.name, code, body, m.name)
					}
				}
				if got := m.caller.metric(`busmesh_envelopes_rejected_total{component="ambassador",reason="malformed"}`); got != 0 {
					t.Errorf("mesh %s: %v envelopes rejected", m.name, got)
				}
				resp, err := http.Get("http://" + m.caller.admin + "/v1/services?service=" + service)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, other := range meshes {
					if knows := strings.Contains(string(raw), `"`+other.sidecar+`"`); knows != (other == m) {
						t.Errorf("mesh %s: knows the instance of mesh %s: %v, want %v\n%s", m.name, other.name, knows, other == m, raw)
					}
				}
			}
			// Mesh green loses its instance: its calls fail, mesh blue's go on.
			meshes[1].callee.stop(syscall.SIGTERM)
			eventually(t, 5*time.Second, "green answers no-healthy-instances", func() bool {
				code, _, reason := get(meshes[1])
				return code == 503 && reason == "no-healthy-instances"
			})
			if code, body, _ := get(meshes[0]); code != 200 || body != meshes[0].name {
				t.Errorf("mesh blue after green's instance left: %d %q", code, body)
			}
		})
	}
}

// TestStartOrder: the caller's sidecar starts before the service's. A call
// made at once, to the service its routes name, waits for the service's
// first instance instead of being refused no-healthy-instances, so pods
// and processes may start in any order; once the first announcement
// interval has passed without one, the same call is refused at once; one
// whose deadline ends while it waits is answered timed out.
func TestStartOrder(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				io.WriteString(w, "up")
			}))
			t.Cleanup(srv.Close)
			mesh, service, port := unique("order"), unique("late"), freePort(t)
			startSidecar(t, "caller", meshCallerConfig, map[string]string{
				"id": unique("caller"), "mesh": mesh, "broker": b.url, "service": service, "port": port,
			})
			type result struct {
				status int
				reason string
				body   string
				err    error
			}
			answered := make(chan result, 1)
			go func() {
				resp, err := http.Get("http://" + port + "/")
				if err != nil {
					answered <- result{err: err}
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				answered <- result{resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), string(body), nil}
			}()
			startSidecar(t, "callee", meshCalleeConfig, map[string]string{
				"id": unique("callee"), "mesh": mesh, "broker": b.url, "service": service,
				"instance": unique("inst"), "target": srv.URL,
			})
			r := <-answered
			if r.err != nil || r.status != http.StatusOK || r.body != "up" {
				t.Fatalf("the call made before the service started: %d %q %q (%v), want 200 \"up\"", r.status, r.reason, r.body, r.err)
			}

			// A second caller, whose service never starts: after the first
			// interval (2s) its calls are refused at once.
			other := freePort(t)
			startSidecar(t, "caller-nobody", meshCallerConfig, map[string]string{
				"id": unique("caller"), "mesh": mesh, "broker": b.url, "service": unique("nobody"), "port": other,
			})
			// Within the first interval, a call whose deadline ends
			// while it waits is answered as timed out.
			req, _ := http.NewRequest("GET", "http://"+other+"/", nil)
			req.Header.Set("X-Busmesh-Timeout", "300ms")
			if resp, err := http.DefaultClient.Do(req); err != nil {
				t.Fatal(err)
			} else {
				resp.Body.Close()
				if resp.StatusCode != http.StatusGatewayTimeout || resp.Header.Get("X-Busmesh-Error") != "timeout" {
					t.Errorf("a call with a 300ms deadline to a service not started yet: %d %q, want 504 timeout", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))
				}
			}
			time.Sleep(3 * time.Second)
			start := time.Now()
			resp, err := http.Get("http://" + other + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("X-Busmesh-Error") != "no-healthy-instances" {
				t.Errorf("a call to a service that never started: %d %q, want 503 no-healthy-instances", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))
			}
			if took > time.Second {
				t.Errorf("a call to a service that never started, after the first interval, took %v, want it refused at once", took)
			}
		})
	}
}
