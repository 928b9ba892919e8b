package e2e

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
)

const plainCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  target: {{target}}
`

const shadowCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: web
  upstreams:
    {{service}}: {{port}}
  timeout: 5s
  brokers:
    shadow: {{shadow}}
  services:
    {{service}}:
      mirror: {broker: shadow, percent: 10}
`

// TestShadowBroker: a broker migration canaried like a release. The
// caller's sidecar is on NATS and holds a second connection, to RabbitMQ
// or Kafka, where the same service runs; 10 % of the calls are copied
// there, fire and forget. The caller sees only the NATS answers; the
// shadow service gets its share (±2 %), counted on both sides: the
// shadow's adapter counts the calls it served, the caller's ambassador the
// copies it sent and the answers it dropped.
func TestShadowBroker(t *testing.T) {
	all := brokers(t)
	primary := all[0] // nats
	for _, shadow := range all[1:] {
		t.Run("nats-to-"+shadow.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, primary)
			requireBroker(t, shadow)
			testShadowBroker(t, primary, shadow)
		})
	}
}

func testShadowBroker(t *testing.T, primary, shadow brokerCase) {
	service := unique("ledger")
	var hits [2]atomic.Int64 // served on the primary, on the shadow
	var shadowSide *sidecar
	for i, b := range []brokerCase{primary, shadow} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			hits[i].Add(1)
			io.WriteString(w, b.name)
		}))
		t.Cleanup(app.Close)
		s := startSidecar(t, "callee-"+b.name, plainCalleeConfig, map[string]string{
			"id": unique("ledger-" + b.name), "broker": b.url, "service": service, "target": app.URL,
		})
		if i == 1 {
			shadowSide = s
		}
	}
	port := freePort(t)
	caller := startSidecar(t, "caller", shadowCallerConfig, map[string]string{
		"id": unique("web"), "broker": primary.url, "service": service, "port": port, "shadow": shadow.url,
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	call := getter(client, port)
	eventually(t, 10*time.Second, "the service answers", func() bool {
		_, err := call()
		return err == nil
	})
	// The shadow's queue is there before counting starts (Kafka creates
	// its topic on the first copy): copies until one is answered.
	eventually(t, 20*time.Second, "the shadow answers a copy", func() bool {
		_, _ = call()
		return caller.metric(`busmesh_ambassador_mirror_answers_total{to_broker="shadow"}`) > 0
	})

	before := [2]int64{hits[0].Load(), hits[1].Load()}
	sentBefore := caller.metric(`busmesh_ambassador_mirrored_total{to_broker="shadow"}`)
	answeredBefore := caller.metric(`busmesh_ambassador_mirror_answers_total{to_broker="shadow",code="200"}`)
	servedBefore := shadowSide.metric(fmt.Sprintf(`busmesh_adapter_requests_total{service=%q}`, service))
	const n = 4000
	var next atomic.Int64
	var mu sync.Mutex
	got, failed := map[string]int{}, 0
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= n {
				v, err := call()
				mu.Lock()
				if err != nil {
					failed++
				} else {
					got[v]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got[primary.name] != n || failed > 0 {
		t.Errorf("the caller saw %v and %d failures, want %d answers from %s only", got, failed, n, primary.name)
	}
	shadowHits := func() int64 { return hits[1].Load() - before[1] }
	eventually(t, 15*time.Second, "the copies served and their answers counted", func() bool {
		sent := caller.metric(`busmesh_ambassador_mirrored_total{to_broker="shadow"}`) - sentBefore
		answered := caller.metric(`busmesh_ambassador_mirror_answers_total{to_broker="shadow",code="200"}`) - answeredBefore
		served := shadowSide.metric(fmt.Sprintf(`busmesh_adapter_requests_total{service=%q}`, service)) - servedBefore
		return sent > 0 && answered >= sent && float64(shadowHits()) >= sent && served >= float64(shadowHits())
	})
	sent := caller.metric(`busmesh_ambassador_mirrored_total{to_broker="shadow"}`) - sentBefore
	answered := caller.metric(`busmesh_ambassador_mirror_answers_total{to_broker="shadow",code="200"}`) - answeredBefore
	served := shadowSide.metric(fmt.Sprintf(`busmesh_adapter_requests_total{service=%q}`, service)) - servedBefore
	share := float64(shadowHits()) / n
	t.Logf("nats to %s: of %d calls, %.0f copied to the shadow (%.1f%%), %d served there (adapter counted %.0f), %.0f answers dropped; primary served %d",
		shadow.name, n, sent, 100*sent/n, shadowHits(), served, answered, hits[0].Load()-before[0])
	if math.Abs(share-0.10) > 0.02 {
		t.Errorf("the shadow got %.1f%% of the calls, want 10%% ± 2", 100*share)
	}
	if served != float64(shadowHits()) || answered != sent || sent != float64(shadowHits()) {
		t.Errorf("counts disagree: copies sent %.0f, served by the app %d, counted by the shadow adapter %.0f, answers counted %.0f",
			sent, shadowHits(), served, answered)
	}
	if d := caller.metric(`busmesh_ambassador_mirror_dropped_total`); d > 0 {
		t.Errorf("%v mirror copies dropped: %s", d, caller.grep("busmesh_ambassador_mirror_dropped_total"))
	}
	if hits[0].Load()-before[0] != n {
		t.Errorf("the primary served %d calls, want %d", hits[0].Load()-before[0], n)
	}
}

// TestMirrorLatency: a slow mirror adds nothing to the caller's p99. One
// caller sidecar (built without the race detector) on NATS; on RabbitMQ
// the same service runs as version fast and as version slow (answers after
// 50 ms). Rounds alternate, side by side: every call mirrored to fast,
// then to slow (changed through the admin API), with no mirror for
// reference; each round 4 callers make 1,000 calls. Copying costs the
// caller's sidecar the same either way; the mirror's slowness must add
// nothing: the median p99 mirrored to slow stays within 1.5× (plus 1 ms)
// of the median p99 mirrored to fast, over five rounds of each; best of
// three such comparisons, as the other timing bounds (a loaded machine
// moves single rounds by tens of milliseconds).
func TestMirrorLatency(t *testing.T) {
	all := brokers(t)
	primary, shadow := all[0], all[1] // nats, rabbitmq
	requireBroker(t, primary)
	requireBroker(t, shadow)
	service := unique("quote")
	primaryApp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, primary.name)
	}))
	t.Cleanup(primaryApp.Close)
	startSidecarWith(t, plainBinary, "callee-nats", plainCalleeConfig, map[string]string{
		"id": unique("quote-nats"), "broker": primary.url, "service": service, "target": primaryApp.URL,
	})
	for _, v := range []string{"fast", "slow"} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if v == "slow" {
				time.Sleep(50 * time.Millisecond)
			}
			io.WriteString(w, v)
		}))
		t.Cleanup(app.Close)
		startSidecarWith(t, plainBinary, "callee-"+v, versionedCalleeConfig, map[string]string{
			"id": unique("quote-" + v), "broker": shadow.url, "service": service, "version": v, "target": app.URL,
		})
	}
	port := freePort(t)
	caller := startSidecarWith(t, plainBinary, "caller", shadowCallerConfig, map[string]string{
		"id": unique("web"), "broker": primary.url, "service": service, "port": port, "shadow": shadow.url,
	})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	t.Cleanup(client.CloseIdleConnections)
	call := func() error {
		resp, err := client.Get("http://" + port + "/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != primary.name {
			return fmt.Errorf("status %d: %s", resp.StatusCode, body)
		}
		return nil
	}
	mirror := func(version string) {
		t.Helper()
		body := fmt.Sprintf(`{"mirror":{"broker":"shadow","version":%q,"percent":100}}`, version)
		if version == "" {
			body = `{}`
		}
		if code, out := adminPut(t, "http://"+caller.admin+"/v1/routes/"+service, body); code != 200 {
			t.Fatalf("PUT /v1/routes/%s %s = %d %s", service, body, code, out)
		}
	}
	round := func() time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for next.Add(1) <= 1000 {
					began := time.Now()
					err := call()
					d := time.Since(began)
					if err != nil {
						t.Errorf("call: %v", err)
						return
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return p99(lat)
	}
	eventually(t, 10*time.Second, "the service answers", func() bool { return call() == nil })
	for _, v := range []string{"fast", "slow"} {
		mirror(v)
		eventually(t, 20*time.Second, "a copy answered by "+v, func() bool {
			before := caller.metric(`busmesh_ambassador_mirror_answers_total{to_broker="shadow"}`)
			_ = call()
			time.Sleep(100 * time.Millisecond)
			return caller.metric(`busmesh_ambassador_mirror_answers_total{to_broker="shadow"}`) > before
		})
	}
	median := func(d []time.Duration) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[len(s)/2]
	}
	best := math.Inf(1)
	for attempt := range 3 {
		p99s := map[string][]time.Duration{}
		for range 5 {
			for _, v := range []string{"", "fast", "slow"} {
				mirror(v)
				p99s[v] = append(p99s[v], round())
			}
		}
		none, fast, slow := median(p99s[""]), median(p99s["fast"]), median(p99s["slow"])
		t.Logf("attempt %d: caller p99, median of 5 rounds of 1,000 calls: no mirror %v; every call mirrored over %s to a fast service %v, to a 50ms-slow one %v (slow/fast ×%.2f)",
			attempt+1, none, shadow.name, fast, slow, float64(slow)/float64(fast))
		t.Logf("rounds: none %v, fast %v, slow %v", p99s[""], p99s["fast"], p99s["slow"])
		if slow <= fast*3/2+time.Millisecond {
			return
		}
		best = math.Min(best, float64(slow)/float64(fast))
	}
	t.Errorf("a slow mirror raised the caller's p99 ×%.2f against a fast one at best, want within 1.5× (+1ms)", best)
}

// adminPut makes a PUT with a JSON body on the admin API from loopback.
func adminPut(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// mirrorToTheEndCaller mirrors every call of the service to v2, on the
// caller's own broker; v1 answers.
const mirrorToTheEndCaller = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: web
  upstreams:
    {{service}}: {{port}}
  timeout: 10s
  services:
    {{service}}:
      split: {v1: 100}
      mirror: {version: v2, percent: 100}
`

// mirrorToTheEndSecure is the same with identities, calls and answers
// sealed: the mirror's grants and pongs must be sealed for the shadow.
const mirrorToTheEndSecure = secureCallerConfig + `  services:
    {{service}}:
      split: {v1: 100}
      mirror: {version: v2, percent: 100}
      seal: true
`

// TestMirrorAnswersToTheEnd: the mirror is a caller that reads its copies'
// answers to their end, as the caller does the primary's, and drops them.
// A 3 MiB answer streamed by the shadow (three times the window a copy
// offers) is served whole within seconds, not stalled; a copy whose shadow
// takes 8.5 s, longer than an adapter waits for an unanswered caller
// (pinged after 2 s quiet, reaped after two unanswered pings: 6–8 s), is
// served to its end: its pings are answered. It gets the call's whole
// 10 s timeout from when it is sent, after the primary's 3 s answer, not
// the 7 s the call's own deadline leaves. The shadow's application sees
// both calls complete, its adapter reaps nothing, and the caller gets the
// primary's answers as fast as without a mirror. Plain, and with
// identities and sealing.
func TestMirrorAnswersToTheEnd(t *testing.T) {
	b := brokers(t)[0] // nats
	for _, secure := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "sealed"}[secure]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			testMirrorAnswersToTheEnd(t, b, secure)
		})
	}
}

func testMirrorAnswersToTheEnd(t *testing.T, b brokerCase, secure bool) {
	const (
		streamed  = 3 << 20
		chunk     = 64 << 10
		primaryIn = 3 * time.Second
		shadowIn  = 8500 * time.Millisecond
	)
	service := unique("mirrored")
	var p *pki
	var serviceCert cert // both versions' instances: a sealed copy is addressed to the service's identity
	if secure {
		p = newPKI(t, broker.DefaultMesh)
		serviceCert = p.issue(service, time.Hour, time.Now())
	}
	// What the shadow's application saw of each call: "done", or how it
	// was cut off.
	var mu sync.Mutex
	seen := map[string]string{}
	saw := func(path, what string) {
		mu.Lock()
		seen[path] = what
		mu.Unlock()
	}
	shadowSaw := func(path string) string {
		mu.Lock()
		defer mu.Unlock()
		return seen[path]
	}
	var shadow *sidecar
	for _, v := range []string{"v1", "v2"} {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/stream":
				data := make([]byte, chunk)
				for i := 0; i < streamed/chunk; i++ {
					if _, err := w.Write(data); err != nil {
						if v == "v2" {
							saw(r.URL.Path, fmt.Sprintf("write failed after %d bytes: %v", i*chunk, err))
						}
						return
					}
					w.(http.Flusher).Flush()
				}
			case "/slow":
				began := time.Now()
				d := primaryIn
				if v == "v2" {
					d = shadowIn
				}
				select {
				case <-time.After(d):
					io.WriteString(w, v)
				case <-r.Context().Done():
					if v == "v2" {
						saw(r.URL.Path, fmt.Sprintf("cancelled after %v: %v", time.Since(began).Round(time.Millisecond), context.Cause(r.Context())))
					}
					return
				}
			}
			if v == "v2" && r.Context().Err() == nil {
				saw(r.URL.Path, "done")
			}
		}))
		t.Cleanup(app.Close)
		vars := map[string]string{"id": unique("mirrored-" + v), "broker": b.url, "service": service, "version": v, "target": app.URL}
		var s *sidecar
		if secure {
			vars["extra"] = "  version: " + v + "\n  seal: true\n"
			s = startSidecar(t, "callee-"+v, secureCalleeConfig, serviceCert.vars(vars))
		} else {
			s = startSidecar(t, "callee-"+v, versionedCalleeConfig, vars)
		}
		if v == "v2" {
			shadow = s
		}
	}
	port := freePort(t)
	vars := map[string]string{"id": unique("web"), "broker": b.url, "service": service, "port": port}
	if secure {
		vars["http"] = freePort(t)
		startSidecar(t, "caller", mirrorToTheEndSecure, p.issue("web", time.Hour, time.Now()).vars(vars))
	} else {
		startSidecar(t, "caller", mirrorToTheEndCaller, vars)
	}
	get := func(path string) ([]byte, time.Duration, error) {
		began := time.Now()
		resp, err := http.Get("http://" + port + path)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d %s", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))
		}
		return body, time.Since(began), err
	}
	inflight := func() float64 { return shadow.metric("busmesh_adapter_inflight_requests") }
	eventually(t, 10*time.Second, "the service answers", func() bool {
		body, _, err := get("/stream")
		return err == nil && len(body) == streamed
	})
	eventually(t, 10*time.Second, "the shadow done with its first copies", func() bool { return inflight() == 0 })
	reapedBefore := shadow.metric("busmesh_adapter_calls_reaped_total")

	// The stream: the shadow's copy ends within seconds, as the primary's.
	saw("/stream", "")
	if body, d, err := get("/stream"); err != nil || len(body) != streamed || d > 2*time.Second {
		t.Errorf("GET /stream: %d bytes in %v, %v; want %d within 2s", len(body), d, err, streamed)
	}
	eventually(t, 4*time.Second, "the shadow streams its 3 MiB answer to its end (a stalled one stays in flight)",
		func() bool { return inflight() == 0 && shadowSaw("/stream") != "" })

	// The slow call: the caller has v1's answer in 3 s; the shadow's copy
	// runs 8.5 s to its end.
	body, d, err := get("/slow")
	if err != nil || string(body) != "v1" || d > primaryIn+time.Second {
		t.Errorf("GET /slow: %q in %v, %v; want v1's answer in about %v", body, d, err, primaryIn)
	}
	eventually(t, shadowIn+2*time.Second, "the shadow's slow copy ended", func() bool {
		return shadowSaw("/slow") != "" && inflight() == 0
	})
	for _, path := range []string{"/stream", "/slow"} {
		if got := shadowSaw(path); got != "done" {
			t.Errorf("the shadow's copy of %s: %s, want done", path, got)
		}
	}
	if r := shadow.metric("busmesh_adapter_calls_reaped_total") - reapedBefore; r != 0 {
		t.Errorf("the shadow's adapter reaped %v mirrored calls, want none:\n%s", r, shadow.log.Tail(20))
	}
}
