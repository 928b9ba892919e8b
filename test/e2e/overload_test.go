package e2e

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
			startSidecarWith(t, plainBinary, "caller", callerConfig, map[string]string{
				"id": unique("caller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
			})
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 500}}
			t.Cleanup(client.CloseIdleConnections)
			var mu sync.Mutex
			var ok, overloaded, other, late int
			others := map[string]int{}
			var refusals []time.Duration
			slowAt := map[int]int{}
			end := time.Now().Add(*overloadFor)
			var wg sync.WaitGroup
			began := time.Now()
			for range 500 {
				wg.Go(func() {
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
							time.Sleep(time.Second) // Retry-After: 1
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
