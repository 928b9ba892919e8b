package ambassador

import (
	"strings"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
)

// TestBrokerSplitTable: a route's brokers weights compile to lanes that
// share the calls by percentage; a weight naming a broker not opened at
// start is refused with the key, the value and what is allowed.
func TestBrokerSplitTable(t *testing.T) {
	primaryL, rabbit := &lane{name: primaryLane}, &lane{name: "rabbit"}
	lanes := map[string]*lane{primaryLane: primaryL, "rabbit": rabbit}
	cfg := &config.Ambassador{LB: config.LBQueue, Services: map[string]*config.ServicePolicy{
		"orders": {Brokers: map[string]int{"primary": 90, "rabbit": 10}},
		"cut":    {Brokers: map[string]int{"primary": 0, "rabbit": 100}},
		"plain":  {},
	}}
	tb, err := compile(cfg, broker.NewSubjects(""), nil, lanes, 1)
	if err != nil {
		t.Fatal(err)
	}
	if tb.route("plain").traffic != nil {
		t.Error("a service without traffic rules has some")
	}
	count := func(service string, n int) map[string]int {
		got := map[string]int{}
		rt := tb.route(service)
		for range n {
			c := &Call{Route: rt, lane: primaryL}
			rt.traffic.chooseLane(c)
			got[c.lane.name]++
			if c.splitBroker() != c.lane.name {
				t.Fatalf("splitBroker %q, lane %q", c.splitBroker(), c.lane.name)
			}
		}
		return got
	}
	if got := count("cut", 1000); got["rabbit"] != 1000 {
		t.Errorf("cut over: %v, want every call on rabbit", got)
	}
	// 10 % of 20,000: 2,000 ± 4.5σ (σ ≈ 42).
	if got := count("orders", 20000); got["rabbit"] < 1800 || got["rabbit"] > 2200 || got["primary"]+got["rabbit"] != 20000 {
		t.Errorf("90/10: %v, want about 2,000 on rabbit", got)
	}

	cfg.Services["orders"].Brokers = map[string]int{"primary": 90, "kafka": 10}
	_, err = compile(cfg, broker.NewSubjects(""), nil, lanes, 2)
	want := `ambassador.services.orders.brokers.kafka: "kafka" is not a broker this sidecar opened at start (allowed: primary, rabbit`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("compile with an unknown broker: %v, want %q", err, want)
	}
}

// TestServiceStatePerBroker: a service split over brokers keeps a retry
// budget and breaker on each, so a failing new broker opens its own
// breaker, not the primary's.
func TestServiceStatePerBroker(t *testing.T) {
	a := &Ambassador{primary: &lane{name: primaryLane}}
	rabbit := &lane{name: "rabbit"}
	rt := &Route{Service: "orders", Policy: (&config.Ambassador{}).Policy("orders")}
	onPrimary, onRabbit := &Call{Route: rt, lane: a.primary}, &Call{Route: rt, lane: rabbit}
	if a.serviceOf(onPrimary) == a.serviceOf(onRabbit) {
		t.Error("one state for the primary and rabbit")
	}
	if a.serviceOf(onRabbit) != a.serviceOf(&Call{Route: rt, lane: rabbit}) {
		t.Error("two states for rabbit")
	}
	if a.serviceOf(onPrimary) != a.serviceOf(&Call{Route: rt}) {
		t.Error("a call without a lane is not on the primary")
	}
	if got := a.onLane(onRabbit); got != " on broker rabbit" {
		t.Errorf("onLane = %q", got)
	}
}
