package fault

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker/brokertest"

	"github.com/busmesh/busmesh/internal/testutil"
	"github.com/busmesh/busmesh/test/testport"
)

// brokerCase is one broker the cases run over.
type brokerCase struct {
	name string
	url  string
}

// brokers are the shared brokers of the cases that do not restart theirs.
func brokers() []brokerCase {
	return []brokerCase{
		{"nats", "nats://" + envOr("BUSMESH_TEST_NATS", "127.0.0.1:4222")},
		{"rabbitmq", "amqp://guest:guest@" + envOr("BUSMESH_TEST_RABBITMQ", "127.0.0.1:5672") + "/"},
		{"kafka", kafkaURL},
	}
}

// requireBroker skips (fails in CI) when b is not reachable.
func requireBroker(t *testing.T, b brokerCase) {
	t.Helper()
	switch b.name {
	case "nats":
		brokertest.Require(t, "nats-server", strings.TrimPrefix(b.url, "nats://"),
			"start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js")
	case "rabbitmq":
		u, _ := url.Parse(b.url)
		brokertest.Require(t, "rabbitmq", u.Host, "rabbitmq-server -detached")
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := testport.Free()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sidecar is a running `busmesh sidecar` process.
type sidecar struct {
	t     *testing.T
	name  string
	file  string
	admin string
	cmd   *exec.Cmd
	log   *testutil.Buffer
	done  chan struct{}
}

// startSidecar writes config (with its admin address added) and starts a
// sidecar on it, waiting until it is ready.
func startSidecar(t *testing.T, name, config string) *sidecar {
	t.Helper()
	admin := freePort(t)
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte("admin: "+admin+"\n"+config), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &sidecar{t: t, name: name, file: file, admin: admin}
	s.start()
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("--- %s log (last 4 KiB) ---\n%s", name, s.log.Tail(4096))
		}
	})
	return s
}

// start (re)starts the process on its config and waits until it is ready.
func (s *sidecar) start() {
	s.t.Helper()
	s.log, s.done = &testutil.Buffer{}, make(chan struct{})
	s.cmd = exec.Command(binary, "sidecar", "--config", s.file)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := s.done
	go func() { s.cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + s.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			s.t.Fatalf("sidecar %s exited at start: %v\n%s", s.name, s.cmd.ProcessState, s.log.Tail(4096))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sidecar %s not ready after 20s\n%s", s.name, s.log.Tail(4096))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop signals the process and waits for it to exit (SIGKILL after 15 s).
func (s *sidecar) stop(sig os.Signal) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.t.Errorf("sidecar %s did not exit within 15s of %v", s.name, sig)
		s.cmd.Process.Kill()
		<-s.done
	}
}

// meshOptions shape a mesh.
type meshOptions struct {
	broker      string
	lb          string // queue or direct
	policy      string // more YAML under ambassador.services.echo (retry, breaker, outlier), indented 6
	concurrency int    // the adapters'; 0 is 64
}

// mesh is three instances of service echo (an application process and
// its adapter each) and one ambassador in front, on one broker, in a
// mesh namespace of their own.
type mesh struct {
	t        *testing.T
	name     string
	apps     []*app
	adapters []*sidecar
	amb      *sidecar
	http     string // the ambassador's HTTP port
}

func startMesh(t *testing.T, o meshOptions) *mesh {
	t.Helper()
	if o.concurrency == 0 {
		o.concurrency = 64
	}
	m := &mesh{t: t, name: fmt.Sprintf("fault%d", rand.Uint32())}
	common := fmt.Sprintf("mesh: %s\nbroker: %q\nlog: {level: info}\ndiscovery: {interval: 500ms}\n", m.name, o.broker)
	for i := range 3 {
		a := startApp(t)
		m.apps = append(m.apps, a)
		id := fmt.Sprintf("echo-%d", i)
		m.adapters = append(m.adapters, startSidecar(t, id, common+fmt.Sprintf(`id: %s
adapter:
  service: echo
  instance: %s
  target: http://%s
  concurrency: %d
  health: {http: /healthz, interval: 100ms, timeout: 500ms}
`, id, id, a.addr, o.concurrency)))
	}
	m.http = freePort(t)
	m.amb = startSidecar(t, "caller", common+fmt.Sprintf(`id: caller
ambassador:
  service: caller
  http: %s
  timeout: 2s
  services:
    echo:
      lb: %s
%s`, m.http, o.lb, o.policy))
	// Ready when calls go through and (in direct mode) every instance is
	// known; in queue mode the broker may take a while to spread them.
	seen := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		r := m.call("GET")
		if r.status == 200 {
			seen[r.instance] = true
			if len(seen) == 3 || o.lb == "queue" && time.Until(deadline) < 15*time.Second {
				return m
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("mesh not serving 3 instances after 20s (saw %v)", seen)
	return nil
}

// result is one call's outcome, as its caller saw it.
type result struct {
	at       time.Time // when it was made
	latency  time.Duration
	status   int    // 0: no HTTP answer
	reason   string // X-Busmesh-Error
	instance string // X-Busmesh-Instance
	method   string
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1024}}

// call makes one call to echo through the ambassador.
func (m *mesh) call(method string) result {
	start := time.Now()
	req, _ := http.NewRequest(method, "http://"+m.http+"/work", strings.NewReader("payload"))
	req.Host = "echo"
	resp, err := client.Do(req)
	r := result{at: start, method: method}
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.status, r.reason, r.instance = resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), resp.Header.Get("X-Busmesh-Instance")
	} else {
		r.reason = "transport: " + err.Error()
	}
	r.latency = time.Since(start)
	return r
}

// load is steady load from callers goroutines, each calling in a loop
// until stop.
type load struct {
	m       *mesh
	stopped chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []result
}

func (m *mesh) startLoad(callers int, method func(caller int) string) *load {
	l := &load{m: m, stopped: make(chan struct{})}
	for i := range callers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stopped:
					return
				default:
				}
				r := m.call(method(i))
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
			}
		})
	}
	m.t.Cleanup(l.stop)
	return l
}

func (l *load) stop() {
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	l.wg.Wait()
}

func get(int) string { return "GET" }

// since returns the results of calls made at or after t.
func (l *load) since(t time.Time) []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []result
	for _, r := range l.results {
		if !r.at.Before(t) {
			out = append(out, r)
		}
	}
	return out
}

// summary is the counts of a set of results.
type summary struct {
	calls, failed, late int
	reasons             map[string]int
	p50, p99, max       time.Duration
	instances           map[string]int
}

// lateAfter is how long past its 2 s deadline a call may be answered
// before it counts as late (the machine is busy).
const lateAfter = 2*time.Second + 500*time.Millisecond

func summarize(rs []result) summary {
	s := summary{calls: len(rs), reasons: map[string]int{}, instances: map[string]int{}}
	lat := make([]time.Duration, 0, len(rs))
	for _, r := range rs {
		lat = append(lat, r.latency)
		if r.status != 200 {
			s.failed++
			s.reasons[fmt.Sprintf("%d %s %s", r.status, r.reason, r.method)]++
		}
		if r.latency > lateAfter {
			s.late++
		}
		if r.instance != "" {
			s.instances[r.instance]++
		}
	}
	slices.Sort(lat)
	if n := len(lat); n > 0 {
		s.p50, s.p99, s.max = lat[n/2], lat[min(n-1, n*99/100)], lat[n-1]
	}
	return s
}

func (s summary) String() string {
	return fmt.Sprintf("calls=%d failed=%d (%.2f%%) late=%d p50=%v p99=%v max=%v reasons=%v instances=%v",
		s.calls, s.failed, 100*float64(s.failed)/float64(max(s.calls, 1)), s.late,
		s.p50.Round(10*time.Microsecond), s.p99.Round(10*time.Microsecond), s.max.Round(time.Millisecond), s.reasons, s.instances)
}

// report prints a case's figures on the test's output, always (the
// suite's point is its counts).
func report(t *testing.T, what string, s summary) {
	t.Helper()
	fmt.Printf("fault %-40s %s\n", t.Name()+" "+what+":", s)
}
