package config_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/busmesh/busmesh/internal/config"
)

// TestBrokerSplitValidation: a service's brokers weights name the primary
// or an ambassador.brokers entry and are percentages adding up to 100, in
// either mode.
func TestBrokerSplitValidation(t *testing.T) {
	parse := func(yaml string) error {
		_, err := config.Parse("t.yaml", []byte("broker: nats://127.0.0.1:4222\nambassador:\n  http: 127.0.0.1:15001\n"+
			"  brokers: {rabbit: \"amqp://guest:guest@127.0.0.1:5672/\"}\n  services:\n    orders:\n"+yaml),
			func(string) (string, bool) { return "", false })
		return err
	}
	for _, ok := range []string{
		"      brokers: {primary: 90, rabbit: 10}\n",
		"      brokers: {rabbit: 100}\n",
		"      lb: direct\n      brokers: {primary: 90, rabbit: 10}\n",
		"      split: {v1: 90, v2: 10}\n      brokers: {primary: 50, rabbit: 50}\n",
	} {
		if err := parse(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for yaml, want := range map[string]string{
		"      brokers: {primary: 90, kafka: 10}\n":   `ambassador.services.orders.brokers.kafka: "kafka" is not a broker (allowed: primary, rabbit; more go in ambassador.brokers)`,
		"      brokers: {primary: 90, rabbit: 20}\n":  "ambassador.services.orders.brokers: the weights add up to 110 (primary=90 rabbit=20), not 100",
		"      brokers: {rabbit: 10}\n":               "ambassador.services.orders.brokers: the weights add up to 10 (rabbit=10), not 100",
		"      brokers: {rabbit: -1, primary: 101}\n": "ambassador.services.orders.brokers.primary: 101 is not a percentage (allowed: 0 to 100)",
	} {
		if err := parse(yaml); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

func TestShiftBrokers(t *testing.T) {
	const key = "ambassador.services.orders.brokers"
	for _, tt := range []struct {
		now, weights, want map[string]int
	}{
		{nil, map[string]int{"rabbit": 10}, map[string]int{"primary": 90, "rabbit": 10}},
		{map[string]int{"primary": 90, "rabbit": 10}, map[string]int{"rabbit": 100}, map[string]int{"primary": 0, "rabbit": 100}},
		{map[string]int{"primary": 0, "rabbit": 100}, map[string]int{"primary": 100}, map[string]int{"primary": 100, "rabbit": 0}},
	} {
		got, err := config.ShiftBrokers(key, tt.now, tt.weights)
		if err != nil || !maps.Equal(got, tt.want) {
			t.Errorf("ShiftBrokers(%v, %v) = %v, %v; want %v", tt.now, tt.weights, got, err, tt.want)
		}
	}
	if _, err := config.ShiftBrokers(key, nil, map[string]int{"rabbit": 120}); err == nil || !strings.Contains(err.Error(), key+".rabbit: 120 is not a percentage") {
		t.Errorf("ShiftBrokers 120: %v", err)
	}
}

// TestBrokerSameAsPrimary: an ambassador.brokers entry that names the
// sidecar's own broker (other credentials or options aside) is refused;
// another vhost on the same server is another broker.
func TestBrokerSameAsPrimary(t *testing.T) {
	parse := func(primary, other string) error {
		_, err := config.Parse("t.yaml", []byte("broker: "+primary+"\nambassador:\n  http: 127.0.0.1:15001\n"+
			"  brokers: {again: \""+other+"\"}\n"), func(string) (string, bool) { return "", false })
		return err
	}
	err := parse("nats://127.0.0.1:4222", "nats://u:p@127.0.0.1:4222?mesh=x")
	if err == nil || !strings.Contains(err.Error(), "ambassador.brokers.again:") || !strings.Contains(err.Error(), "is the sidecar's own broker") {
		t.Errorf("the primary again: %v, want refused naming ambassador.brokers.again", err)
	}
	if err := parse("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:guest@127.0.0.1:5672/other"); err != nil {
		t.Errorf("another vhost: %v, want accepted", err)
	}
}

// TestShiftBrokersWords: a broker shift that cannot be done says so in
// brokers' words, with a broker weight as the example.
func TestShiftBrokersWords(t *testing.T) {
	_, err := config.ShiftBrokers("ambassador.services.ledger.brokers", map[string]int{"primary": 0, "rabbit": 100}, map[string]int{"rabbit": 50})
	if err == nil || !strings.Contains(err.Error(), "the other brokers (primary) have weight 0") || !strings.Contains(err.Error(), "example: broker:primary=50") {
		t.Errorf("got %v, want it in brokers' words", err)
	}
}
