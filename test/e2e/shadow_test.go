package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
	call := func() (string, error) {
		resp, err := client.Get("http://" + port + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", fmt.Errorf("status %d %s: %s", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body)
		}
		return string(body), nil
	}
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
	if hits[0].Load()-before[0] != n {
		t.Errorf("the primary served %d calls, want %d", hits[0].Load()-before[0], n)
	}
}
