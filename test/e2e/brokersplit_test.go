package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const brokerSplitCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: web
  upstreams:
    {{service}}: {{port}}
  timeout: 5s
  brokers:
    {{second}}: {{url}}
  services:
    {{service}}:
      lb: {{lb}}
      brokers: {{weights}}
`

// TestBrokerSplit: a broker migration done live, as a release. The
// caller's sidecar is on NATS and holds a second connection, to RabbitMQ
// or Kafka, where the same service runs. Under load (8 callers, ~18 s),
// `busmesh shift SERVICE broker:NAME=10` sends 10 % of the calls over the
// second broker — real calls, answered to the caller — and
// `busmesh shift SERVICE broker:NAME=100` cuts over: every call sent after
// the command returned goes over the second broker (its answer says so in
// the body and in X-Busmesh-Broker). No call fails; the 10 % share holds
// within ±2 % by the callers' answers and by the adapters' own counts; a
// body larger than one message streams both ways over the second broker.
// Then the config file: weights adding up to 110 are refused (the error
// names key and value, the cut-over stays), 50/50 applies live.
// In queue mode to RabbitMQ and Kafka; in direct mode to RabbitMQ, where
// the instance is picked among those discovery sees over RabbitMQ.
func TestBrokerSplit(t *testing.T) {
	all := brokers(t)
	primary := all[0] // nats
	for _, second := range all[1:] {
		modes := []string{"queue"}
		if second.name == "rabbitmq" {
			modes = append(modes, "direct")
		}
		for _, lb := range modes {
			t.Run("nats-to-"+second.name+"/"+lb, func(t *testing.T) {
				t.Parallel()
				requireBroker(t, primary)
				requireBroker(t, second)
				testBrokerSplit(t, primary, second, lb)
			})
		}
	}
}

// splitAnswer is one call's outcome: which broker's service answered (the
// body), and the X-Busmesh-Broker header.
type splitAnswer struct{ body, header string }

func testBrokerSplit(t *testing.T, primary, second brokerCase, lb string) {
	service := unique("ledger")
	var adapters [2]*sidecar
	for i, b := range []brokerCase{primary, second} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				io.Copy(w, r.Body) // the streaming check: an echo
				return
			}
			io.WriteString(w, b.name)
		}))
		t.Cleanup(app.Close)
		adapters[i] = startSidecar(t, "callee-"+b.name, plainCalleeConfig, map[string]string{
			"id": unique("ledger-" + b.name), "broker": b.url, "service": service, "target": app.URL,
		})
	}
	port, admin := freePort(t), freePort(t)
	file := filepath.Join(t.TempDir(), "caller.yaml")
	id := unique("web")
	write := func(weights string) {
		t.Helper()
		text := strings.NewReplacer("{{id}}", id, "{{broker}}", primary.url, "{{admin}}", admin, "{{service}}", service,
			"{{port}}", port, "{{second}}", second.name, "{{url}}", second.url, "{{lb}}", lb, "{{weights}}", weights).
			Replace(brokerSplitCallerConfig)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("{primary: 100}")
	caller := runSidecar(t, binary, "caller", file, admin)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	call := func() (splitAnswer, error) {
		resp, err := client.Get("http://" + port + "/")
		if err != nil {
			return splitAnswer{}, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return splitAnswer{}, fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return splitAnswer{string(body), resp.Header.Get("X-Busmesh-Broker")}, nil
	}
	shift := func(weight string) {
		t.Helper()
		out, err := exec.Command(binary, "shift", service, weight, "--admin", caller.admin).CombinedOutput()
		if err != nil {
			t.Fatalf("busmesh shift %s %s: %v\n%s", service, weight, err, out)
		}
		t.Logf("busmesh shift %s %s: %s", service, weight, strings.TrimSpace(string(out)))
	}
	served := func(i int) float64 {
		return adapters[i].metric(fmt.Sprintf(`busmesh_adapter_requests_total{service=%q}`, service))
	}

	eventually(t, 10*time.Second, "the service answers", func() bool {
		a, err := call()
		return err == nil && a.body == primary.name && a.header == "primary"
	})
	// The second broker's queues (Kafka: topics) are there before the
	// load: cut over until its service answers, and back.
	shift("broker:" + second.name + "=100")
	eventually(t, 20*time.Second, "the service on "+second.name+" answers", func() bool {
		a, err := call()
		return err == nil && a.body == second.name
	})
	// Streaming over the second broker: a body of several messages each
	// way (request frames, answer frames, grants).
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16)
	resp, err := client.Post("http://"+port+"/", "application/octet-stream", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	echo, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(echo, big) || resp.Header.Get("X-Busmesh-Broker") != second.name {
		t.Errorf("3 MiB echo over %s: status %d, %d bytes back (equal %v), X-Busmesh-Broker %q",
			second.name, resp.StatusCode, len(echo), bytes.Equal(echo, big), resp.Header.Get("X-Busmesh-Broker"))
	}
	shift("broker:primary=100")

	// The load. phase: 0 all on the primary, 1 after the 10 % shift
	// returned, 2 after the cut-over returned; a call counts in the phase
	// it was sent in, and not at all while a shift runs (-1).
	var phase atomic.Int32
	var mu sync.Mutex
	got := map[int32]map[splitAnswer]int{-1: {}, 0: {}, 1: {}, 2: {}}
	var total, failed atomic.Int64
	stop := callers(8, func() {
		p := phase.Load()
		a, err := call()
		total.Add(1)
		if err != nil {
			if failed.Add(1) <= 3 {
				t.Logf("call failed: %v", err)
			}
			return
		}
		mu.Lock()
		got[p][a]++
		mu.Unlock()
	})
	time.Sleep(2 * time.Second)
	phase.Store(-1)
	shift("broker:" + second.name + "=10")
	phase.Store(1)
	before := [2]float64{served(0), served(1)}
	// Enough calls for the share to be judged within ±2 % (2,500: the
	// bar is three standard deviations), however busy the machine.
	for end := time.Now().Add(40 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := 0
		for _, c := range got[1] {
			n += c
		}
		mu.Unlock()
		if n >= 2500 {
			break
		}
	}
	// The adapters' counts before the cut-over: after it, every call
	// would add to the second's.
	during := [2]float64{served(0) - before[0], served(1) - before[1]}
	phase.Store(-1)
	shift("broker:" + second.name + "=100")
	phase.Store(2)
	time.Sleep(6 * time.Second)
	stop()

	onPrimary, onSecond := splitAnswer{primary.name, "primary"}, splitAnswer{second.name, second.name}
	mu.Lock()
	defer mu.Unlock()
	n1 := got[1][onPrimary] + got[1][onSecond]
	share := float64(got[1][onSecond]) / float64(n1)
	adapterShare := during[1] / (during[0] + during[1])
	t.Logf("nats to %s, %s: %d calls, %d failed; before: %v; at 10%%: %d calls, %d over %s (%.2f%%), adapters counted %.0f on nats and %.0f on %s (%.2f%%); after the cut-over: %v",
		second.name, lb, total.Load(), failed.Load(), got[0], n1, got[1][onSecond], second.name, 100*share,
		during[0], during[1], second.name, 100*adapterShare, got[2])
	t.Logf("caller: %s", caller.grep("busmesh_ambassador_broker_calls_total"))
	if failed.Load() > 0 {
		t.Errorf("%d of %d calls failed", failed.Load(), total.Load())
	}
	if len(got[0]) != 1 || got[0][onPrimary] == 0 {
		t.Errorf("before the shift: %v, want every call on the primary", got[0])
	}
	if len(got[1]) != 2 || n1 < 2000 {
		t.Errorf("at 10 %%: %v, want calls on both (at least 2,000 in all, in 40 s)", got[1])
	}
	if math.Abs(share-0.10) > 0.02 || math.Abs(adapterShare-0.10) > 0.02 {
		t.Errorf("at 10 %%: %.2f%% by the answers, %.2f%% by the adapters' counts; want 10 %% ± 2", 100*share, 100*adapterShare)
	}
	if len(got[2]) != 1 || got[2][onSecond] == 0 {
		t.Errorf("after the cut-over: %v, want every call over %s", got[2], second.name)
	}

	// The config file: a bad value is refused and the cut-over stays; a
	// good one applies (and, changing this service's rules, replaces the
	// admin change).
	write(fmt.Sprintf("{primary: 90, %s: 20}", second.name))
	want := fmt.Sprintf("ambassador.services.%s.brokers: the weights add up to 110 (", service)
	eventually(t, 5*time.Second, "the bad weights refused", func() bool {
		log := caller.log.String()
		return strings.Contains(log, "config reload refused") && strings.Contains(log, want) && strings.Contains(log, second.name+"=20")
	})
	if a, err := call(); err != nil || a != onSecond {
		t.Errorf("after a refused reload: %v, %v; want the cut-over in force (%v)", a, err, onSecond)
	}
	write(fmt.Sprintf("{primary: 50, %s: 50}", second.name))
	waitReload(t, caller, 1)
	seen := map[splitAnswer]int{}
	for range 200 {
		a, err := call()
		if err != nil {
			t.Fatalf("after the 50/50 reload: %v", err)
		}
		seen[a]++
	}
	t.Logf("after the 50/50 reload: %v", seen)
	if seen[onPrimary] < 50 || seen[onSecond] < 50 {
		t.Errorf("after the 50/50 reload: %v, want both brokers", seen)
	}
}
