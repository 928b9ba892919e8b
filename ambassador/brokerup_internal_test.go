package ambassador

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
)

// downBroker is a broker whose connection is down: it says so, and
// publishes nothing.
type downBroker struct{ loopBroker }

func (*downBroker) Connected() bool { return false }

func (*downBroker) Publish(context.Context, string, []byte) error {
	return context.DeadlineExceeded // as a reconnect buffer would, at the deadline
}

// An outage of the sidecar's own broker refuses at once the calls that go
// over it, and none of those its service's brokers weights send to
// another broker, which is up.
func TestBrokerDownPerLane(t *testing.T) {
	cfg := config.NewAmbassador()
	cfg.Service = "web"
	cfg.Services = map[string]*config.ServicePolicy{"moved": {Brokers: map[string]int{"other": 100}}}
	other := &loopBroker{resp: envelope.Response{Status: 200, Instance: "i-1"}}
	a, err := New(context.Background(), Options{Config: cfg, Sidecar: "web-1", Broker: &downBroker{},
		Brokers: map[string]broker.Broker{"other": other}})
	if err != nil {
		t.Fatal(err)
	}
	for service, want := range map[string]int{"moved": 200, "stayed": 503} {
		w := httptest.NewRecorder()
		a.Handler(service).ServeHTTP(w, httptest.NewRequest("GET", "http://127.0.0.1/", nil))
		if w.Code != want {
			t.Errorf("%s: %d %s, want %d", service, w.Code, w.Header().Get("X-Busmesh-Error"), want)
		}
		if want == 503 && !strings.Contains(w.Header().Get("X-Busmesh-Error"), "broker-unavailable") {
			t.Errorf("%s: reason %q, want broker-unavailable", service, w.Header().Get("X-Busmesh-Error"))
		}
	}
}
