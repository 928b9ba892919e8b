// Package e2e holds end-to-end suites: they build the busmesh binary once,
// start real sidecar processes from YAML files next to real applications,
// and call them with real clients, over each broker.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/busmesh/busmesh/broker/brokertest"

	"github.com/busmesh/busmesh/internal/testutil"
	"github.com/busmesh/busmesh/test/testport"
)

// binary is the busmesh binary built by TestMain, with the race detector
// when the tests run with it; plainBinary is built without, for the tests
// that compare latencies of a few milliseconds, which the race detector's
// slowdown (about 5×) would drown.
var binary, plainBinary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("e2e: skipped under -short")
		return 0
	}
	dir, err := os.MkdirTemp("", "busmesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "busmesh")
	plainBinary = binary
	if raceEnabled {
		// The sidecars run with the race detector too: real traffic through
		// real processes is where data races show.
		if !build(binary, "-race") {
			return 1
		}
		plainBinary = filepath.Join(dir, "busmesh-plain")
	}
	if !build(plainBinary) {
		return 1
	}
	// Kafka: a real cluster when BUSMESH_TEST_KAFKA_BROKERS names one, else
	// an in-process kfake cluster the sidecar processes reach over TCP.
	if brokers := os.Getenv("BUSMESH_TEST_KAFKA_BROKERS"); brokers != "" {
		kafkaURL = "kafka://" + brokers
	} else {
		// kfake keeps each segment as an in-memory file grown by doubling:
		// 1 MiB segments spare the run copies of Kafka's 100 MiB ones
		// under the suites' large bodies.
		c, err := kfake.NewCluster(kfake.NumBrokers(1),
			kfake.BrokerConfigs(map[string]string{"log.segment.bytes": strconv.Itoa(1 << 20)}))
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: kfake:", err)
			return 1
		}
		defer c.Close()
		kafkaURL = "kafka://" + strings.Join(c.ListenAddrs(), ",")
	}
	return m.Run()
}

// kafkaURL is the Kafka cluster of the suites.
var kafkaURL string

func build(out string, flags ...string) bool {
	args := append(append([]string{"build", "-o", out}, flags...), "../../cmd/busmesh")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build busmesh:", err)
		return false
	}
	return true
}

// brokerCase is one broker the suites run over: only the URL differs.
type brokerCase struct {
	name string
	url  string
	// returns: the broker hands back a request nobody is subscribed to
	// (broker.Returner), so the ambassador answers no-responders at once.
	returns bool
}

// brokers returns the brokers to run over, failing (in CI) or skipping
// where one is not reachable.
func brokers(t testing.TB) []brokerCase {
	t.Helper()
	nats := envOr("BUSMESH_TEST_NATS", "127.0.0.1:4222")
	rabbit := envOr("BUSMESH_TEST_RABBITMQ", "127.0.0.1:5672")
	return []brokerCase{
		{"nats", "nats://" + nats, true},
		{"rabbitmq", "amqp://guest:guest@" + rabbit + "/", true},
		{"kafka", kafkaURL, false},
	}
}

func requireBroker(t testing.TB, b brokerCase) {
	t.Helper()
	switch b.name {
	case "nats":
		brokertest.Require(t, "nats-server", strings.TrimPrefix(b.url, "nats://"),
			"start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js")
	case "rabbitmq":
		u, _ := url.Parse(b.url)
		brokertest.Require(t, "rabbitmq", u.Host, "rabbitmq-server -detached")
	case "kafka":
		brokertest.Require(t, "kafka", strings.Split(strings.TrimPrefix(b.url, "kafka://"), ",")[0],
			"unset BUSMESH_TEST_KAFKA_BROKERS to use the in-process kfake cluster")
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
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

var placeholder = regexp.MustCompile(`\{\{(\w+)\}\}`)

// startSidecar writes a config from a template, filling {{name}} from vars,
// starts the sidecar and waits until its admin port says ready. The config
// must set admin: {{admin}}.
func startSidecar(t testing.TB, name, template string, vars map[string]string) *sidecar {
	t.Helper()
	return startSidecarWith(t, binary, name, template, vars)
}

// startSidecarWith is startSidecar with a given binary.
func startSidecarWith(t testing.TB, bin, name, template string, vars map[string]string) *sidecar {
	t.Helper()
	vars["admin"] = freePort(t)
	text := placeholder.ReplaceAllStringFunc(template, func(m string) string {
		key := m[2 : len(m)-2]
		v, ok := vars[key]
		if !ok {
			t.Fatalf("config template %s: no value for %s", name, m)
		}
		return v
	})
	file := filepath.Join(t.TempDir(), name+".yaml")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return runSidecar(t, bin, name, file, vars["admin"])
}

// runSidecar starts a sidecar on a config file whose admin port is admin,
// and waits until it says ready.
func runSidecar(t testing.TB, bin, name, file, admin string) *sidecar {
	t.Helper()
	return launchSidecar(t, name, admin, exec.Command(bin, "sidecar", "--config", file))
}

// launchSidecar starts cmd, a `busmesh sidecar` whose admin port is admin,
// and waits until it says ready; its output goes to the sidecar's log.
func launchSidecar(t testing.TB, name, admin string, cmd *exec.Cmd) *sidecar {
	t.Helper()
	s := &sidecar{t: t, name: name, admin: admin, log: &testutil.Buffer{}, done: make(chan struct{}), cmd: cmd}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if strings.Contains(s.log.String(), "WARNING: DATA RACE") {
			t.Errorf("sidecar %s: the race detector found a data race", name)
		}
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, s.log.String())
		}
	})
	s.waitReady(15 * time.Second)
	return s
}

func (s *sidecar) waitReady(d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		resp, err := http.Get("http://" + s.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-s.done:
			s.t.Fatalf("sidecar %s exited at start: %v\n%s", s.name, s.cmd.ProcessState, s.log.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sidecar %s not ready after %v\n%s", s.name, d, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop signals the process and waits for it to exit (killing it after 15s).
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
		s.t.Errorf("sidecar %s did not exit within 15s of %v; killing it", s.name, sig)
		s.cmd.Process.Kill()
		<-s.done
	}
}

// metric returns the sum of the samples on the sidecar's /metrics that
// have series' name and every label series names (others may differ), 0
// if none. series is written as Prometheus prints it:
// name{label="value",...}.
func (s *sidecar) metric(series string) float64 {
	s.t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	name, want := splitSeries(series)
	sum := 0.0
	for line := range strings.SplitSeq(string(body), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		n, labels := splitSeries(line[:sp])
		if n != name {
			continue
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[sp+1:]), 64)
		if err != nil {
			s.t.Fatalf("metric %s: %v", series, err)
		}
		sum += v
	}
	return sum
}

// splitSeries splits name{a="x",b="y"} into the name and its labels.
func splitSeries(series string) (string, map[string]string) {
	name, rest, ok := strings.Cut(series, "{")
	labels := map[string]string{}
	if !ok {
		return name, labels
	}
	rest = strings.TrimSuffix(rest, "}")
	for rest != "" {
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		v, err := strconv.QuotedPrefix(after)
		if err != nil {
			break
		}
		labels[k], _ = strconv.Unquote(v)
		rest = strings.TrimPrefix(after[len(v):], ",")
	}
	return name, labels
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually retries cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// grep returns the lines of the sidecar's /metrics that start with prefix.
func (s *sidecar) grep(prefix string) string {
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out []string
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// callers runs call from n goroutines, each calling again as soon as it
// returns, until stop is called; stop waits for them to end.
func callers(n int, call func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				call()
			}
		})
	}
	return func() { close(done); wg.Wait() }
}
