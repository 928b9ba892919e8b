package e2e

import (
	"flag"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

var overloadFor = flag.Duration("overload.duration", 6*time.Second, "how long TestOverload loads the service")

const overloadCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  target: {{target}}
  concurrency: 4
`

// TestOverload: 500 callers against one instance that serves 4 calls at a
// time, 50 ms each (a capacity of 80 calls/s), with a 2 s deadline. The
// instance serves at about its capacity, answers the excess overloaded at
// once (callers honour its Retry-After), its application never sees more
// than 4 calls at a time, and no call is answered after its deadline.
func TestOverload(t *testing.T) {
	for _, b := range brokers(t)[:2] { // NATS and RabbitMQ
		t.Run(b.name, func(t *testing.T) {
			// Not in parallel: the figures are about one instance's
			// capacity on a machine shared with the load.
			requireBroker(t, b)
			var inApp, maxInApp atomic.Int64
			app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				n := inApp.Add(1)
				for m := maxInApp.Load(); n > m && !maxInApp.CompareAndSwap(m, n); m = maxInApp.Load() {
				}
				time.Sleep(50 * time.Millisecond)
				inApp.Add(-1)
				io.WriteString(w, "served")
			}))
			t.Cleanup(app.Close)
			service, port := unique("busy"), freePort(t)
			startSidecarWith(t, plainBinary, "callee", overloadCalleeConfig, map[string]string{
				"id": unique("busy"), "broker": b.url, "service": service, "target": app.URL,
			})
			startSidecarWith(t, plainBinary, "caller", strings.Replace(callerConfig, "level: debug", "level: info", 1), map[string]string{
				"id": unique("caller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
			})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 500}}
			t.Cleanup(client.CloseIdleConnections)
			var mu sync.Mutex
			var ok, overloaded, other, late int
			others := map[string]int{}
			var refusals, firstWave []time.Duration
			slowAt := map[int]int{}
			end := time.Now().Add(*overloadFor)
			var wg sync.WaitGroup
			began := time.Now()
			for i := range 500 {
				wg.Go(func() {
					// Callers arrive over the first half second and wait
					// Retry-After with ±20 % jitter, as retrying clients
					// do: 500 in lockstep would be a burst each second,
					// timing the test machine's scheduler rather than
					// the mesh (TestOverloadAnnouncedCapacity sends the
					// cold burst).
					time.Sleep(time.Duration(i) * time.Millisecond)
					for time.Now().Before(end) {
						req, _ := http.NewRequest("GET", "http://"+port+"/", nil)
						req.Header.Set("X-Busmesh-Timeout", "2s")
						start := time.Now()
						resp, err := client.Do(req)
						took := time.Since(start)
						reason := ""
						status := 0
						if err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							status, reason = resp.StatusCode, resp.Header.Get("X-Busmesh-Error")
						}
						mu.Lock()
						switch {
						case status == 200:
							ok++
						case reason == "overloaded":
							overloaded++
							refusals = append(refusals, took)
							if start.Sub(began) < time.Second {
								firstWave = append(firstWave, took)
							}
							if took > 50*time.Millisecond {
								slowAt[int(start.Sub(began)/time.Second)]++
							}
						default:
							other++
							others[http.StatusText(status)+" "+reason]++
						}
						if took > 2250*time.Millisecond {
							late++
						}
						mu.Unlock()
						if reason == "overloaded" {
							time.Sleep(time.Duration(800+rand.IntN(400)) * time.Millisecond) // Retry-After: 1
						}
					}
				})
			}
			wg.Wait()
			secs := time.Since(began).Seconds()
			sort.Slice(refusals, func(i, j int) bool { return refusals[i] < refusals[j] })
			fast := sort.Search(len(refusals), func(i int) bool { return refusals[i] > 50*time.Millisecond })
			prompt := sort.Search(len(refusals), func(i int) bool { return refusals[i] > 100*time.Millisecond })
			p95 := time.Duration(0)
			if len(refusals) > 0 {
				p95 = refusals[len(refusals)*95/100]
			}
			t.Logf("%s: overloaded answers over 50ms, by the second of the run their call was sent in: %v", b.name, slowAt)
			if n := len(firstWave); n > 0 {
				sort.Slice(firstWave, func(i, j int) bool { return firstWave[i] < firstWave[j] })
				t.Logf("%s: the first second's %d overloaded answers: p10 %v, p50 %v, p90 %v, max %v", b.name, n,
					firstWave[n/10].Round(time.Millisecond), firstWave[n/2].Round(time.Millisecond), firstWave[n*9/10].Round(time.Millisecond), firstWave[n-1].Round(time.Millisecond))
			}
			t.Logf("%s: %.0f calls/s served (capacity 80), %d overloaded (%d within 50ms, p95 %v), %d other failures %v, %d answered after 2.25s, at most %d calls in the app at once",
				b.name, float64(ok)/secs, overloaded, fast, p95.Round(time.Millisecond), other, others, late, maxInApp.Load())
			// The bars are 80 % of capacity and 95 % of refusals within 50 ms
			// (the figures are logged, and recorded from quiet runs); on a
			// 2-core machine that also runs the 500 callers (with the race
			// detector in CI) and other suites, the test holds 60 % and 75 %
			// within 100 ms, which a mesh that queues the excess to its
			// deadline misses by far.
			if float64(ok)/secs < 0.6*80 {
				t.Errorf("goodput %.0f calls/s, want at least 60%% of the capacity of 80", float64(ok)/secs)
			}
			if overloaded == 0 || float64(prompt) < 0.75*float64(overloaded) {
				t.Errorf("%d of %d overloaded answers within 100ms, want at least 75%%", prompt, overloaded)
			}
			// A call that waited at the instance is served or refused in
			// time, never left to its caller's deadline (504).
			if total := ok + overloaded + other; other*100 > total {
				t.Errorf("%d of %d calls failed other than overloaded (%v), want at most 1%%", other, total, others)
			}
			if m := maxInApp.Load(); m > 4 {
				t.Errorf("the application saw %d calls at once, want at most 4 (adapter.concurrency)", m)
			}
			if late > 0 {
				t.Errorf("%d calls answered after their 2s deadline", late)
			}
		})
	}
}

// TestOverloadAnnouncedCapacity: the ambassador refuses at once, without
// sending them, the calls beyond what the service's instances announce
// they can take before the calls' deadlines (its concurrency, and the line
// it lets wait), and only those:
//   - a cold burst of 200 calls at one instance that serves 4 at a time and
//     has measured nothing yet: the excess is answered overloaded, much of
//     it by the ambassador (busmesh_ambassador_shed_total);
//   - the same instance, measured and then idle for several announcement
//     intervals (its median time falls to 0; its service time does not):
//     a burst of 60 calls that all fit in their 2 s deadline is served
//     whole, none refused by the ambassador.
func TestOverloadAnnouncedCapacity(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "served")
	}))
	t.Cleanup(app.Close)
	service, port := unique("room"), freePort(t)
	startSidecarWith(t, plainBinary, "callee", overloadCalleeConfig+"discovery:\n  interval: 500ms\n", map[string]string{
		"id": unique("room"), "broker": b.url, "service": service, "target": app.URL,
	})
	caller := startSidecarWith(t, plainBinary, "caller", callerConfig, map[string]string{
		"id": unique("caller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	t.Cleanup(client.CloseIdleConnections)
	burst := func(n int) map[string]int {
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				req, _ := http.NewRequest("GET", "http://"+port+"/", nil)
				req.Header.Set("X-Busmesh-Timeout", "2s")
				what := "error"
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					what = strconv.Itoa(resp.StatusCode) + " " + resp.Header.Get("X-Busmesh-Error")
				}
				mu.Lock()
				got[what]++
				mu.Unlock()
			})
		}
		wg.Wait()
		return got
	}
	shed := `busmesh_ambassador_shed_total{service="` + service + `"}`

	// The ambassador sheds by what the instance announces: the cold burst
	// starts once it has heard it (on a busy machine the announcement can
	// come after the caller is ready; calls then go out unshed).
	eventually(t, 10*time.Second, "the caller hears the instance's concurrency", func() bool {
		return announcedConcurrency(t, caller, service) == 4
	})
	cold := burst(200)
	coldShed := caller.metric(shed)
	t.Logf("cold burst of 200: %v, %v shed by the ambassador", cold, coldShed)
	if cold["200 "] == 0 || cold["503 overloaded"] == 0 || cold["200 "]+cold["503 overloaded"] != 200 {
		t.Errorf("cold burst: %v, want served and overloaded calls only", cold)
	}
	if coldShed == 0 {
		t.Errorf("cold burst: no call shed by the ambassador, want the excess over 4 serving and 4 waiting (twice) refused before sending")
	}

	// Measured and announced, then idle for three intervals.
	for range 4 {
		burst(4)
	}
	time.Sleep(1500 * time.Millisecond)
	warm := burst(60)
	t.Logf("burst of 60 after idling: %v, %v shed by the ambassador", warm, caller.metric(shed)-coldShed)
	if warm["200 "] != 60 {
		t.Errorf("burst of 60 that fits the deadline: %v, want all 60 served", warm)
	}
	if n := caller.metric(shed) - coldShed; n != 0 {
		t.Errorf("%v calls of a burst that fits shed by the ambassador, want 0", n)
	}
}

// announcedConcurrency is the concurrency s's admin API says service's
// healthy instances announce in all, 0 before it has heard one.
func announcedConcurrency(t *testing.T, s *sidecar, service string) uint32 {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/v1/services?service=" + service)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0
	}
	var list busmeshv1.ListServicesResponse
	if err := protojson.Unmarshal(raw, &list); err != nil {
		t.Fatalf("GET /v1/services: %v\n%s", err, raw)
	}
	var n uint32
	for _, svc := range list.Services {
		for _, in := range svc.Instances {
			if in.Healthy {
				n += in.Concurrency
			}
		}
	}
	return n
}
