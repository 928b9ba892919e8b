package e2e

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// runCLI runs the busmesh binary and returns its exit code, stdout and
// stderr.
func runCLI(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("busmesh %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// deadAddr is a loopback address nobody listens on.
func deadAddr(t *testing.T) string { return freePort(t) }

// holdPort listens on a free port for the rest of the test.
func holdPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestCLI runs the verbs against a `busmesh dev` mesh: exit codes scripts
// can use, plain JSON (numbers as numbers, bodies as text), errors said for
// people, version of the CLI and the sidecar, wait-ready, and the hint of
// an adapter-only sidecar.
func TestCLI(t *testing.T) {
	m := startDev(t)

	t.Run("call exit codes", func(t *testing.T) {
		tests := []struct {
			name       string
			args       []string
			want       int
			wantStderr []string
		}{
			{"answered", []string{"call", "demo", "/hello"}, 0, nil},
			{"client error is the service's answer", []string{"call", "demo", "/status/404"}, 0, nil},
			{"mesh error", []string{"call", "nosuch", "/x"}, 3, []string{"the mesh answered 503 no-healthy-instances", "try: busmesh services nosuch"}},
			{"server error", []string{"call", "demo", "/status/503"}, 4, []string{"the service answered 503"}},
			{"no sidecar", []string{"call", "demo", "/x", "--admin", deadAddr(t)}, 1, []string{"no busmesh admin API answers at", "connection refused", "try: "}},
			{"top, no sidecar", []string{"top", "--once", "--admin", deadAddr(t)}, 1, []string{"no busmesh admin API answers at", "connection refused", "try: "}},
			{"usage", []string{"call", "demo"}, 2, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				args := tt.args
				if !strings.Contains(strings.Join(args, " "), "--admin") {
					args = append(args, "--admin", m.admin)
				}
				code, stdout, stderr := runCLI(t, nil, args...)
				if code != tt.want {
					t.Errorf("busmesh %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, tt.want, stdout, stderr)
				}
				for _, w := range tt.wantStderr {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr does not say %q:\n%s", w, stderr)
					}
				}
				if strings.Contains(stderr, "rpc error") || strings.Contains(stderr, "desc =") {
					t.Errorf("stderr shows raw gRPC text:\n%s", stderr)
				}
			})
		}
	})

	t.Run("json shapes", func(t *testing.T) {
		var call struct {
			Status     *float64          `json:"status"`
			DurationMs *float64          `json:"duration_ms"`
			Body       *string           `json:"body"`
			Instance   string            `json:"instance"`
			Headers    map[string]string `json:"headers"`
		}
		decode(t, &call, "call", "demo", "/echo", "-X", "POST", "-d", "plain text body", "--admin", m.admin, "-o", "json")
		if call.Status == nil || *call.Status != 200 || call.DurationMs == nil || *call.DurationMs <= 0 ||
			call.Body == nil || *call.Body != "plain text body" || call.Instance != "dev" {
			t.Errorf("call -o json = %+v, want status 200, duration_ms > 0, body as text, instance dev", call)
		}
		var mesh struct {
			Status    float64 `json:"status"`
			MeshError string  `json:"mesh_error"`
		}
		decode(t, &mesh, "call", "nosuch", "/x", "--admin", m.admin, "-o", "json")
		if mesh.Status != 503 || mesh.MeshError != "no-healthy-instances" {
			t.Errorf("call -o json to an unknown service = %+v, want 503 no-healthy-instances", mesh)
		}

		var services struct {
			Services []struct {
				Name      string  `json:"name"`
				Healthy   float64 `json:"healthy"`
				Instances []struct {
					Name        string   `json:"name"`
					Healthy     bool     `json:"healthy"`
					Inflight    *float64 `json:"inflight"`
					Concurrency float64  `json:"concurrency"`
					P50Ms       *float64 `json:"p50_ms"`
				} `json:"instances"`
			} `json:"services"`
		}
		decode(t, &services, "services", "--admin", m.admin, "-o", "json")
		if len(services.Services) != 1 || services.Services[0].Name != "demo" || services.Services[0].Healthy != 1 ||
			len(services.Services[0].Instances) != 1 || services.Services[0].Instances[0].Concurrency != 128 ||
			services.Services[0].Instances[0].Inflight == nil || services.Services[0].Instances[0].P50Ms == nil {
			t.Errorf("services -o json = %+v, want demo with one healthy instance, numbers as numbers", services)
		}

		var stats struct {
			Sidecar    string  `json:"sidecar"`
			UptimeS    float64 `json:"uptime_s"`
			Ambassador []struct {
				Service  string             `json:"service"`
				Requests float64            `json:"requests"`
				Codes    map[string]float64 `json:"codes"`
				Errors   map[string]float64 `json:"errors"`
				P99Ms    *float64           `json:"p99_ms"`
			} `json:"ambassador"`
		}
		decode(t, &stats, "stats", "--admin", m.admin, "-o", "json")
		var demo, nosuch bool
		for _, s := range stats.Ambassador {
			demo = demo || s.Service == "demo" && s.Requests >= 1 && s.Codes["200"] >= 1 && s.P99Ms != nil
			// A service nobody serves is counted as unknown: a bogus name
			// never becomes a label value.
			nosuch = nosuch || s.Service == "unknown" && s.Errors["no-healthy-instances"] >= 1
		}
		if stats.Sidecar != "dev" || stats.UptimeS <= 0 || !demo || !nosuch {
			t.Errorf("stats -o json = %+v, want counts as numbers for demo and the mesh error of nosuch", stats)
		}

		var routes struct {
			Routes []struct {
				Kind    string `json:"kind"`
				Service string `json:"service"`
			} `json:"routes"`
		}
		decode(t, &routes, "routes", "--admin", m.admin, "-o", "json")
		if len(routes.Routes) < 3 {
			t.Errorf("routes -o json = %+v, want the shared port, the demo port and the adapter", routes)
		}
	})

	t.Run("version", func(t *testing.T) {
		var v struct {
			CLI struct {
				Version string `json:"version"`
				Go      string `json:"go"`
			} `json:"cli"`
			Sidecar *struct {
				Sidecar     string  `json:"sidecar"`
				Version     string  `json:"version"`
				Ready       bool    `json:"ready"`
				UptimeS     float64 `json:"uptime_s"`
				BrokerState string  `json:"broker_state"`
			} `json:"sidecar"`
		}
		decode(t, &v, "version", "-o", "json")
		if v.CLI.Version == "" || !strings.HasPrefix(v.CLI.Go, "go") || v.Sidecar != nil {
			t.Errorf("version -o json = %+v, want the CLI's version only", v)
		}
		decode(t, &v, "version", "--admin", m.admin, "-o", "json")
		if v.Sidecar == nil || v.Sidecar.Sidecar != "dev" || v.Sidecar.Version == "" || !v.Sidecar.Ready || v.Sidecar.BrokerState != "connected" {
			t.Errorf("version --admin -o json = %+v, want the sidecar's too", v.Sidecar)
		}
		code, stdout, _ := runCLI(t, nil, "version", "--admin", m.admin)
		if code != 0 || !strings.Contains(stdout, "busmesh ") || !strings.Contains(stdout, "sidecar dev at "+m.admin) {
			t.Errorf("version --admin: exit %d\n%s", code, stdout)
		}
		if code, _, stderr := runCLI(t, nil, "version", "--admin", deadAddr(t)); code != 1 || !strings.Contains(stderr, "no busmesh admin port answers") {
			t.Errorf("version --admin DEAD: exit %d, want 1 with a reason\n%s", code, stderr)
		}
	})

	t.Run("wait-ready", func(t *testing.T) {
		if code, stdout, stderr := runCLI(t, nil, "wait-ready", "--admin", m.admin); code != 0 || !strings.Contains(stdout, "ready: "+m.admin) {
			t.Errorf("wait-ready on a ready sidecar: exit %d\n%s%s", code, stdout, stderr)
		}
		if code, stdout, stderr := runCLI(t, nil, "wait-ready", "--admin", m.admin, "--service", "demo"); code != 0 ||
			!strings.Contains(stdout, m.admin+" knows a healthy instance of demo") {
			t.Errorf("wait-ready --service demo: exit %d\n%s%s", code, stdout, stderr)
		}
		if code, _, stderr := runCLI(t, nil, "wait-ready", "--admin", m.admin, "--service", "nosuch", "--timeout", "500ms"); code != 1 ||
			!strings.Contains(stderr, "knows no healthy instance of nosuch after 500ms") {
			t.Errorf("wait-ready --service nosuch: exit %d, want 1\n%s", code, stderr)
		}
		dead := deadAddr(t)
		code, _, stderr := runCLI(t, nil, "wait-ready", "--admin", dead, "--timeout", "500ms")
		if code != 1 || !strings.Contains(stderr, "sidecar at "+dead+" not ready after 500ms") {
			t.Errorf("wait-ready on no sidecar: exit %d, want 1 naming it\n%s", code, stderr)
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, []string{"DISPLAY="}, "dashboard", "--admin", m.admin)
		if code != 0 || !strings.Contains(stdout, "dashboard of sidecar dev: http://"+m.admin+"/") {
			t.Errorf("busmesh dashboard: exit %d\n%s%s", code, stdout, stderr)
		}
		resp, err := http.Get("http://" + m.admin + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET / on the admin port: %d %s, want the dashboard", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})

	t.Run("services on an adapter-only sidecar", func(t *testing.T) {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
		defer app.Close()
		s := startSidecar(t, "adapter-only", calleeConfig, map[string]string{
			"id": unique("adapter-only"), "broker": m.broker, "service": unique("svc"), "target": app.URL})
		code, stdout, stderr := runCLI(t, nil, "services", "--admin", s.admin)
		if code != 0 || !strings.Contains(stdout, "runs no ambassador") || !strings.Contains(stdout, "--admin") {
			t.Errorf("services on an adapter-only sidecar: exit %d, want a hint\n%s%s", code, stdout, stderr)
		}
	})
}

func decode(t *testing.T, v any, args ...string) {
	t.Helper()
	_, stdout, stderr := runCLI(t, nil, args...)
	if err := json.Unmarshal([]byte(stdout), v); err != nil {
		t.Fatalf("busmesh %s: %v\n%s%s", strings.Join(args, " "), err, stdout, stderr)
	}
}

// TestCheck runs `busmesh check` and `busmesh sidecar --check` on a good
// setup and on broken ones: one line per check, the fix under each
// failure, exit status 1 on any.
func TestCheck(t *testing.T) {
	m := startDev(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/unhealthy" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer app.Close()
	config := func(broker, listen, target, health string) string {
		return writeFile(t, "sidecar.yaml", "id: "+unique("check")+"\nbroker: "+broker+"\nadmin: "+freePort(t)+
			"\nambassador:\n  http: "+listen+"\nadapter:\n  service: "+unique("svc")+"\n  target: "+target+
			"\n  health:\n    http: "+health+"\n")
	}

	t.Run("good", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "check", "--config", config(m.broker, freePort(t), app.URL, "/healthz"))
		for _, w := range []string{"[ok]   config ", "[ok]   broker " + m.broker + " answers", "[ok]   port admin ",
			"[ok]   port ambassador.http ", "[ok]   application " + app.URL + " answers", "[ok]   health check GET /healthz answers 200", "0 failed"} {
			if !strings.Contains(stdout, w) {
				t.Errorf("check output has no %q", w)
			}
		}
		if code != 0 || strings.Contains(stdout, "[FAIL]") {
			t.Errorf("check on a good setup: exit %d\n%s%s", code, stdout, stderr)
		}
	})

	t.Run("broken", func(t *testing.T) {
		busy := holdPort(t)
		code, stdout, stderr := runCLI(t, nil, "check", "--config", config("nats://"+deadAddr(t), busy, "http://"+deadAddr(t), "/healthz"))
		for _, w := range []string{"[FAIL] broker nats://", "is the broker running at", "[FAIL] port ambassador.http " + busy + ": the port is in use",
			"ss -ltnp", "or set ambassador.http to a free port", "[FAIL] application http://", "connection refused",
			"start the application on", "[skip] health check", "3 failed"} {
			if !strings.Contains(stdout, w) {
				t.Errorf("check output has no %q", w)
			}
		}
		if code != 1 {
			t.Errorf("check on a broken setup: exit %d, want 1\n%s%s", code, stdout, stderr)
		}
		if t.Failed() {
			t.Logf("output:\n%s", stdout)
		}
	})

	t.Run("unhealthy app", func(t *testing.T) {
		code, stdout, _ := runCLI(t, nil, "check", "--config", config(m.broker, freePort(t), app.URL, "/unhealthy"))
		if code != 1 || !strings.Contains(stdout, "[FAIL] health check GET /unhealthy answered 503") || !strings.Contains(stdout, "2xx and 3xx") {
			t.Errorf("check with a failing health check: exit %d\n%s", code, stdout)
		}
	})

	t.Run("bad config", func(t *testing.T) {
		bad := writeFile(t, "bad.yaml", "broker: nats//127.0.0.1:4222\nambassador:\n  htp: 127.0.0.1:1\n")
		code, stdout, _ := runCLI(t, nil, "check", "--config", bad)
		if code != 1 || !strings.Contains(stdout, `[FAIL] config `) || !strings.Contains(stdout, `did you mean "nats://127.0.0.1:4222"?`) ||
			!strings.Contains(stdout, `ambassador.htp: unknown key; did you mean "http"?`) {
			t.Errorf("check on a bad config: exit %d\n%s", code, stdout)
		}
	})

	t.Run("mirror brokers", func(t *testing.T) {
		dead := "nats://" + deadAddr(t)
		rabbit := brokers(t)[1] // another broker than the sidecar's own
		requireBroker(t, rabbit)
		file := writeFile(t, "mirror.yaml", "id: "+unique("check")+"\nbroker: "+m.broker+"\nadmin: "+freePort(t)+
			"\nambassador:\n  http: "+freePort(t)+"\n  brokers:\n    shadow: \""+rabbit.url+"\"\n    gone: "+dead+"\n")
		code, stdout, _ := runCLI(t, nil, "check", "--config", file)
		if code != 1 || !strings.Contains(stdout, "[ok]   mirror broker shadow "+broker.Redact(rabbit.url)+" answers") ||
			!strings.Contains(stdout, "[FAIL] mirror broker gone "+dead) || !strings.Contains(stdout, "fix ambassador.brokers.gone") {
			t.Errorf("check with a dead mirror broker: exit %d, want 1 naming it\n%s", code, stdout)
		}
	})

	t.Run("sidecar --check", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "sidecar", "--check", "--config", config(m.broker, freePort(t), app.URL, "/healthz"))
		if code != 0 || !strings.Contains(stdout, "[ok]   config ") || strings.Contains(stdout, "broker ") {
			t.Errorf("sidecar --check on a good config: exit %d, want 0 without touching the broker\n%s%s", code, stdout, stderr)
		}
		code, stdout, _ = runCLI(t, nil, "sidecar", "--check", "--config", config(m.broker, holdPort(t), app.URL, "/healthz"))
		if code != 1 || !strings.Contains(stdout, "[FAIL] port ambassador.http") {
			t.Errorf("sidecar --check with a port in use: exit %d, want 1\n%s", code, stdout)
		}
		code, stdout, _ = runCLI(t, nil, "sidecar", "--check", "--config", writeFile(t, "bad.yaml", "adapter:\n  version: v1\n"))
		if code != 2 || !strings.Contains(stdout, "adapter.service: required") || !strings.Contains(stdout, "adapter.target: required") {
			t.Errorf("sidecar --check on a bad config: exit %d, want 2\n%s", code, stdout)
		}
	})
}

// TestStartRefusals: what stops a start at once, before it disturbs
// anything, with the setting to change: a port in use (dev mode names its
// flag, a sidecar its key), a duplicate instance on the broker, a
// misspelled BUSMESH_ variable, a malformed broker URL.
func TestStartRefusals(t *testing.T) {
	t.Run("dev port in use", func(t *testing.T) {
		busy := holdPort(t)
		start := time.Now()
		code, _, stderr := runCLI(t, nil, "dev", "--admin", busy, "--http", freePort(t), "--service-port", freePort(t))
		if code != 1 || !strings.Contains(stderr, "admin "+busy+": the port is in use") || !strings.Contains(stderr, "pass --admin HOST:PORT") {
			t.Errorf("busmesh dev with its admin port in use: exit %d, want 1 naming the port and --admin\n%s", code, stderr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v to refuse", d)
		}
	})

	t.Run("sidecar port in use", func(t *testing.T) {
		busy := holdPort(t)
		cfg := writeFile(t, "s.yaml", "broker: nats://"+deadAddr(t)+"\nambassador:\n  http: "+busy+"\n")
		start := time.Now()
		code, _, stderr := runCLI(t, nil, "sidecar", "--config", cfg)
		if code != 1 || !strings.Contains(stderr, "ambassador.http "+busy+": the port is in use") || !strings.Contains(stderr, "set ambassador.http to a free port") {
			t.Errorf("sidecar with its port in use: exit %d, want 1 naming key and port\n%s", code, stderr)
		}
		// Found before the (unreachable) broker is tried.
		if d := time.Since(start); d > 3*time.Second || strings.Contains(stderr, "connect to") {
			t.Errorf("the port in use was found after trying the broker (%v)\n%s", d, stderr)
		}
	})

	t.Run("duplicate dev mesh on RabbitMQ", func(t *testing.T) {
		b := brokers(t)[1]
		requireBroker(t, b)
		id := unique("dev")
		env := []string{"BUSMESH_BROKER=" + b.url}
		first := exec.Command(binary, "dev", "--broker", "rabbitmq", "--id", id, "--admin", freePort(t), "--http", freePort(t), "--service-port", freePort(t))
		first.Env = append(os.Environ(), env...)
		stdout, err := first.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := first.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { first.Process.Signal(os.Interrupt); first.Wait() }()
		buf := make([]byte, 4096)
		var printed strings.Builder
		for !strings.Contains(printed.String(), "Press Ctrl-C") {
			n, err := stdout.Read(buf)
			if err != nil {
				t.Fatalf("the first dev mesh ended: %v\n%s", err, printed.String())
			}
			printed.Write(buf[:n])
		}
		go func() { // keep draining
			for {
				if _, err := stdout.Read(buf); err != nil {
					return
				}
			}
		}()
		if !strings.Contains(printed.String(), "join with: broker: "+b.url) {
			t.Errorf("the join URL is not printed as given (%s):\n%s", b.url, printed.String())
		}
		code, _, stderr := runCLI(t, env, "dev", "--broker", "rabbitmq", "--id", id, "--admin", freePort(t), "--http", freePort(t), "--service-port", freePort(t))
		if code != 1 || !strings.Contains(stderr, "is already served on this broker") || !strings.Contains(stderr, "pass --id NAME") {
			t.Errorf("a second dev mesh with the same id: exit %d, want 1 and --id\n%s", code, stderr)
		}
	})

	t.Run("misspelled variable", func(t *testing.T) {
		cfg := writeFile(t, "s.yaml", "ambassador:\n  http: 127.0.0.1:0\n")
		code, _, stderr := runCLI(t, []string{"BUSMESH_BROKR=nats://127.0.0.1:4222"}, "sidecar", "--config", cfg)
		if code != 2 || !strings.Contains(stderr, "BUSMESH_BROKR: unknown variable; did you mean BUSMESH_BROKER?") {
			t.Errorf("a misspelled BUSMESH_ variable: exit %d, want 2 with the nearest name\n%s", code, stderr)
		}
	})

	t.Run("malformed broker URL", func(t *testing.T) {
		cfg := writeFile(t, "s.yaml", "broker: nats//127.0.0.1:4222\nambassador:\n  http: 127.0.0.1:0\n")
		code, _, stderr := runCLI(t, nil, "sidecar", "--config", cfg)
		if code != 2 || !strings.Contains(stderr, `line 1: broker: "nats//127.0.0.1:4222" is not a broker URL; did you mean "nats://127.0.0.1:4222"?`) {
			t.Errorf("a malformed broker URL: exit %d, want 2 naming broker\n%s", code, stderr)
		}
	})
}

// TestReadyLine: the sidecar logs one "ready" line with its addresses, and
// /readyz answers ready from that moment (the line comes first).
func TestReadyLine(t *testing.T) {
	m := startDev(t)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer app.Close()
	http := freePort(t)
	s := startSidecar(t, "ready", "id: {{id}}\nbroker: {{broker}}\nadmin: {{admin}}\nlog:\n  format: json\nambassador:\n  http: {{http}}\nadapter:\n  service: {{service}}\n  target: {{target}}\n",
		map[string]string{"id": unique("ready"), "broker": m.broker, "http": http, "service": unique("svc"), "target": app.URL})
	var ready []map[string]any
	for line := range strings.SplitSeq(s.log.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "ready" {
			ready = append(ready, rec)
		}
	}
	if len(ready) != 1 {
		t.Fatalf("%d ready lines by the time /readyz answered, want 1\n%s", len(ready), s.log.String())
	}
	if ready[0]["admin"] != s.admin || ready[0]["http"] != http || ready[0]["dashboard"] != "http://"+s.admin+"/" {
		t.Errorf("ready line %v, want admin %s, http %s and the dashboard URL", ready[0], s.admin, http)
	}
}
