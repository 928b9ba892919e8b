package config_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/busmesh/busmesh/internal/config"
)

func TestShift(t *testing.T) {
	const key = "ambassador.services.orders.split"
	tests := []struct {
		name    string
		split   map[string]int
		weights map[string]int
		want    map[string]int
		wantErr string
	}{
		{"blue-green", map[string]int{"v1": 100}, map[string]int{"v2": 100}, map[string]int{"v1": 0, "v2": 100}, ""},
		{"canary", map[string]int{"v1": 100}, map[string]int{"v2": 10}, map[string]int{"v1": 90, "v2": 10}, ""},
		{"back to blue", map[string]int{"v1": 0, "v2": 100}, map[string]int{"v1": 100}, map[string]int{"v1": 100, "v2": 0}, ""},
		{"both named", map[string]int{"v1": 9, "v2": 1}, map[string]int{"v1": 0, "v2": 100}, map[string]int{"v1": 0, "v2": 100}, ""},
		{"rest in proportion", map[string]int{"v1": 2, "v2": 1, "v3": 1}, map[string]int{"v3": 50}, map[string]int{"v1": 33, "v2": 17, "v3": 50}, ""},
		{"no split yet", nil, map[string]int{"v2": 100}, map[string]int{"v2": 100}, ""},
		{"nobody takes the rest", map[string]int{"v1": 100}, map[string]int{"v1": 40}, nil, "no other version is in the split to take the other 60"},
		{"over 100", nil, map[string]int{"v1": 60, "v2": 60}, nil, key + ": the weights given add up to 120 (v1=60 v2=60), over 100"},
		{"not a percentage", nil, map[string]int{"v2": 150}, nil, key + ".v2: 150 is not a percentage (allowed: 0 to 100)"},
		{"none", map[string]int{"v1": 1}, nil, nil, "no weights given"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Shift(key, tt.split, tt.weights)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Shift(%v, %v) error = %v, want %q", tt.split, tt.weights, err, tt.wantErr)
				}
				return
			}
			if err != nil || !maps.Equal(got, tt.want) {
				t.Errorf("Shift(%v, %v) = %v, %v; want %v", tt.split, tt.weights, got, err, tt.want)
			}
		})
	}
}

func TestTrafficEqual(t *testing.T) {
	a := config.ServicePolicy{Split: map[string]int{"v1": 1}, Routes: []config.TrafficRoute{{Version: "v2", Match: config.TrafficMatch{Caller: "web"}}}}
	b := a.Traffic()
	b.Routes[0].Match.Headers = map[string]string{}
	if !a.Traffic().Equal(b) {
		t.Error("an empty header map differs from none")
	}
	b.Split["v1"] = 2
	if a.Traffic().Equal(b) || a.Split["v1"] != 1 {
		t.Errorf("a changed copy: Equal true or the policy changed (split %v)", a.Split)
	}
}

func TestValidateService(t *testing.T) {
	a := &config.Ambassador{LB: config.LBQueue, Services: map[string]*config.ServicePolicy{
		"orders": {Split: map[string]int{"v2": -5}, Fallback: "maybe"},
	}}
	err := a.ValidateService("admin API", "orders")
	for _, want := range []string{"ambassador.services.orders.split.v2: -5 must be 0 or more", `ambassador.services.orders.fallback: "maybe" is not a fallback (allowed: any, none)`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateService = %v, want %q", err, want)
		}
	}
}

func TestMirrorBrokerValidation(t *testing.T) {
	parse := func(yaml string) error {
		_, err := config.Parse("t.yaml", []byte("broker: nats://127.0.0.1:4222\nambassador:\n  http: 127.0.0.1:15001\n"+yaml),
			func(string) (string, bool) { return "", false })
		return err
	}
	ok := "  brokers: {shadow: \"amqp://guest:guest@127.0.0.1:5672/\"}\n  services:\n    orders:\n      mirror: {broker: shadow, percent: 10}\n"
	if err := parse(ok); err != nil {
		t.Errorf("a mirror to another broker, no version: %v", err)
	}
	for yaml, want := range map[string]string{
		"  services:\n    orders:\n      mirror: {broker: shadow, percent: 10}\n": `ambassador.services.orders.mirror.broker: "shadow" is not in ambassador.brokers (allowed: none set)`,
		"  brokers: {shadow: \"amqp//x\"}\n":                                      `ambassador.brokers.shadow: "amqp//x" is not a broker URL`,
		"  brokers: {a.b: \"nats://127.0.0.1:4222\"}\n":                           "ambassador.brokers.a.b: broker name",
	} {
		if err := parse(yaml); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}
