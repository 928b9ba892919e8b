package e2e

import (
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
)

const secureBrokerSplitCallerConfig = secureCallerConfig + `  brokers:
    second: {{url}}
  services:
    {{service}}:
      brokers: {second: 100}
`

// TestBrokerSplitSecure: with identities, a call sent over the second
// broker is signed for, and answered by, the service's instance there.
func TestBrokerSplitSecure(t *testing.T) {
	all := brokers(t)
	primary, second := all[0], all[1] // nats, rabbitmq
	requireBroker(t, primary)
	requireBroker(t, second)
	p := newPKI(t, broker.DefaultMesh)
	service := unique("secure")
	var calls atomic.Int64
	app := httptest.NewServer(countingApp(&calls))
	t.Cleanup(app.Close)
	startSidecar(t, "secure-callee", secureCalleeConfig, p.issue(service, 24*time.Hour, time.Now()).vars(map[string]string{
		"id": unique("callee"), "broker": second.url, "service": service, "target": app.URL, "extra": "",
	}))
	port := freePort(t)
	startSidecar(t, "secure-caller", secureBrokerSplitCallerConfig, p.issue("web", 24*time.Hour, time.Now()).vars(map[string]string{
		"id": unique("caller"), "broker": primary.url, "service": service, "http": freePort(t), "port": port, "url": second.url,
	}))
	var last string
	eventually(t, 10*time.Second, "a signed call answered over "+second.name, func() bool {
		resp, body := do(t, newRequest(t, "GET", "http://"+port+"/x", nil))
		if s := resp.Status + " " + resp.Header.Get("X-Busmesh-Error") + " " + string(body); s != last {
			last = s
			t.Logf("answer: %s", s)
		}
		return resp.StatusCode == 200 && string(body) == "app:GET /x" && resp.Header.Get("X-Busmesh-Broker") == "second"
	})
	if calls.Load() == 0 {
		t.Errorf("the application saw no call (last answer %s)", last)
	}
}
