package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker/brokertest"
)

// TestBrokerOutage drops every connection between the sidecars and the
// broker, through a proxy, while calls go on. No call may hang past its
// deadline; the sidecars log the loss once, reconnect on their own and
// carry calls again, without a restart. (Kafka's backend passes the same
// case in its conformance suite, TestConformance/kafka/Reconnect.)
func TestBrokerOutage(t *testing.T) {
	for _, b := range brokers(t) {
		if b.name == "kafka" {
			continue // kfake here is not behind a proxy; see above
		}
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			u, err := url.Parse(b.url)
			if err != nil {
				t.Fatal(err)
			}
			proxy := brokertest.NewProxy(t, u.Host)
			u.Host = proxy.Addr()
			m := startHTTPMesh(t, brokerCase{name: b.name, url: u.String()}, echoApp())
			call := func() (int, time.Duration) {
				req := newRequest(t, "GET", "http://"+m.port+"/outage", nil)
				req.Header.Set("X-Busmesh-Timeout", "1s")
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				resp.Body.Close()
				return resp.StatusCode, time.Since(start)
			}
			callReason := func() (int, string, time.Duration) {
				req := newRequest(t, "GET", "http://"+m.port+"/outage", nil)
				req.Header.Set("X-Busmesh-Timeout", "1s")
				start := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				resp.Body.Close()
				return resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), time.Since(start)
			}
			if code, _ := call(); code != 200 {
				t.Fatalf("before the outage: status %d", code)
			}
			proxy.Cut()
			recovered := false
			for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
				code, took := call()
				if took > 2*time.Second {
					t.Fatalf("a call took %v with a 1s deadline during the outage", took)
				}
				if code == 200 {
					recovered = true
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if !recovered {
				t.Fatal("calls did not succeed again within 20s of the broker coming back")
			}

			// The broker down for a while: once the sidecar knows, every
			// call is answered broker-unavailable at once — not at its
			// deadline, not as missing instances — and the service is back
			// soon after the broker.
			proxy.Down()
			downAt := time.Now()
			eventually(t, 5*time.Second, "calls answered broker-unavailable", func() bool {
				code, reason, _ := callReason()
				return code == 503 && reason == "broker-unavailable"
			})
			// At once: far from the 1s deadline. The bound leaves room for
			// a scheduling stall of the race-enabled suite on a busy
			// machine (one call of about 50 once took over 100ms in CI).
			const atOnce = 250 * time.Millisecond
			var slow, wrong int
			var slowest time.Duration
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
				code, reason, took := callReason()
				slowest = max(slowest, took)
				if took > atOnce {
					slow++
				}
				if code != 503 || reason != "broker-unavailable" {
					wrong++
					t.Logf("during the outage: %d %s", code, reason)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if slow > 0 || wrong > 0 {
				t.Errorf("during the outage, %d calls took over %v and %d were not 503 broker-unavailable", slow, atOnce, wrong)
			}
			t.Logf("%s: the slowest answer during the outage took %v", b.name, slowest.Round(time.Microsecond))
			// Down longer than an instance's lifetime in the registry: the
			// ambassador must not take its own deafness for the mesh gone.
			time.Sleep(time.Until(downAt.Add(10 * time.Second))) // the 10 s, past an instance's 6 s lifetime
			proxy.Up()
			back := time.Now()
			noHealthy := 0
			eventually(t, 10*time.Second, "calls to succeed again", func() bool {
				code, reason, _ := callReason()
				if reason == "no-healthy-instances" {
					noHealthy++
				}
				return code == 200
			})
			if noHealthy > 0 {
				t.Errorf("%d calls answered no-healthy-instances after the broker came back", noHealthy)
			}
			took := time.Since(back)
			t.Logf("%s: service back %v after the broker", b.name, took.Round(time.Millisecond))
			if took > 2*time.Second {
				t.Errorf("service back %v after the broker, want within 2s", took)
			}
			for _, s := range []*sidecar{m.caller, m.callee} {
				eventually(t, 10*time.Second, s.name+" to log the reconnect", func() bool {
					return strings.Contains(s.log.String(), `"msg":"broker reconnected"`)
				})
				if n := strings.Count(s.log.String(), `"msg":"broker connection lost"`); n != 2 {
					t.Errorf("%s logged the lost connection %d times, want once per outage (2)", s.name, n)
				}
			}
		})
	}
}
