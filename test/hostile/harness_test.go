// Package hostile holds the suites that try the mesh as a hostile or
// careless neighbour on the same broker would: they build the busmesh
// binary once, start real sidecar processes next to real applications,
// misbehave on the broker from the test process, and count the calls that
// fail. Each case runs in a mesh of its own on the shared broker.
package hostile

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	_ "github.com/busmesh/busmesh/broker/nats"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"

	"github.com/busmesh/busmesh/internal/testutil"
	"github.com/busmesh/busmesh/test/testport"
)

// binary is the busmesh binary TestMain builds (without the race
// detector: these suites count failures under load).
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("hostile: skipped under -short")
		return 0
	}
	dir, err := os.MkdirTemp("", "busmesh-hostile-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "busmesh")
	cmd := exec.Command("go", "build", "-o", binary, "../../cmd/busmesh")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "hostile: build busmesh:", err)
		return 1
	}
	return m.Run()
}

// long reports whether the longer runs were asked for (make hostile).
func long() bool { return os.Getenv("BUSMESH_HOSTILE_LONG") != "" }

// natsAddr is the NATS server of the suites.
func natsAddr() string {
	if v := os.Getenv("BUSMESH_TEST_NATS"); v != "" {
		return v
	}
	return "127.0.0.1:4222"
}

func requireNATS(t testing.TB) string {
	t.Helper()
	brokertest.Require(t, "nats-server", natsAddr(),
		"start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js")
	return "nats://" + natsAddr()
}

var seq atomic.Int64

// unique returns a name no other case or run uses.
func unique(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, seq.Add(1))
}

// freePort returns a loopback address nobody listens on now.
func freePort(t testing.TB) string {
	t.Helper()
	addr, err := testport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// sidecar is a running `busmesh sidecar` process.
type sidecar struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	admin string
	log   *testutil.Buffer
	done  chan struct{}
}

// startSidecar writes config (which must not set admin) to a file, starts
// a sidecar on it and waits until it is ready.
func startSidecar(t testing.TB, name, config string) *sidecar {
	t.Helper()
	return startSidecarWith(t, binary, name, config)
}

// startSidecarWith is startSidecar with a given binary.
func startSidecarWith(t testing.TB, bin, name, config string) *sidecar {
	t.Helper()
	admin := freePort(t)
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte("admin: "+admin+"\n"+config), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{t: t, name: name, admin: admin, log: &testutil.Buffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "sidecar", "--config", file)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, s.log.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case <-s.done:
			t.Fatalf("sidecar %s exited at start: %v\n%s", name, s.cmd.ProcessState, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sidecar %s not ready after 15s\n%s", name, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the process with SIGTERM and waits (killing it after 15s).
func (s *sidecar) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.t.Errorf("sidecar %s did not exit within 15s; killing it", s.name)
		s.cmd.Process.Kill()
		<-s.done
	}
}

// metric returns one sample of the sidecar's /metrics (0 if absent);
// series is the name with labels as Prometheus prints it.
func (s *sidecar) metric(series string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v
		}
	}
	return 0
}

// services returns the sidecar's discovery view of one service.
func (s *sidecar) services(service string) *busmeshv1.ListServicesResponse {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/v1/services?service=" + service)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out busmeshv1.ListServicesResponse
	if err := protojson.Unmarshal(body, &out); err != nil {
		s.t.Fatalf("services: %v: %s", err, body)
	}
	return &out
}

// mesh is one ambassador calling one service over NATS, in a mesh of its
// own, with instances added by the case.
type mesh struct {
	t        testing.TB
	url      string
	bin      string // the busmesh binary
	name     string // the mesh
	service  string
	interval time.Duration
	caller   *sidecar
	port     string // the caller's port for the service
	app      *httptest.Server
	ca       *meshCA // set by secure: sidecars get identities
}

// newMesh starts the application shared by the instances; addInstance
// and startCaller start the sidecars. lb is "queue" or "direct".
func newMesh(t testing.TB, url string) *mesh {
	m := &mesh{t: t, url: url, bin: binary, name: unique("hostile"), service: "svc", interval: 500 * time.Millisecond}
	m.app = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	t.Cleanup(m.app.Close)
	return m
}

// addInstance starts an adapter sidecar with the given sidecar id and
// instance name.
func (m *mesh) addInstance(id, instance string) *sidecar {
	return startSidecarWith(m.t, m.bin, id, m.identity(m.service)+fmt.Sprintf(`id: %s
mesh: %s
broker: %s
discovery:
  interval: %v
adapter:
  service: %s
  instance: %s
  target: %s
`, id, m.name, m.url, m.interval, m.service, instance, m.app.URL))
}

// startCaller starts the ambassador, balancing the service by lb.
func (m *mesh) startCaller(lb string) {
	m.port = freePort(m.t)
	m.caller = startSidecarWith(m.t, m.bin, "caller", m.identity("web")+fmt.Sprintf(`id: %s
mesh: %s
broker: %s
discovery:
  interval: %v
ambassador:
  upstreams:
    %s: %s
  timeout: 5s
  services:
    %s:
      lb: %s
`, unique("caller"), m.name, m.url, m.interval, m.service, m.port, m.service, lb))
}

// waitHealthy waits until the caller knows n healthy instances.
func (m *mesh) waitHealthy(n int) {
	m.t.Helper()
	if got := m.awaitHealthy(n, 10*time.Second); got < n {
		m.t.Fatalf("the caller knows %d healthy instances after 10s, want %d", got, n)
	}
}

// awaitHealthy waits up to d until the caller knows n healthy instances,
// and returns how many it knows.
func (m *mesh) awaitHealthy(n int, d time.Duration) int {
	m.t.Helper()
	deadline := time.Now().Add(d)
	for {
		healthy := 0
		for _, s := range m.caller.services(m.service).Services {
			healthy = int(s.Healthy)
		}
		if healthy >= n || time.Now().After(deadline) {
			return healthy
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// result counts the calls of a load run.
type result struct {
	ok       int
	failures map[string]int // by status and X-Busmesh-Error, or transport error
}

func (r result) failed() int {
	n := 0
	for _, c := range r.failures {
		n += c
	}
	return n
}

// load calls the service through the caller from workers goroutines until
// ctx ends.
func (m *mesh) load(ctx context.Context, workers int) result {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	res := result{failures: map[string]int{}}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				resp, err := client.Get("http://" + m.port + "/")
				mu.Lock()
				switch {
				case err != nil:
					if ctx.Err() == nil {
						res.failures[err.Error()]++
					}
				case resp.StatusCode == http.StatusOK:
					res.ok++
				default:
					res.failures[fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))]++
				}
				mu.Unlock()
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	wg.Wait()
	return res
}

// forger is a neighbour on the broker.
func forger(t testing.TB, url string) broker.Broker {
	t.Helper()
	b, err := broker.Open(t.Context(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
