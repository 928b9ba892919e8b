package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/busmesh/busmesh/internal/config"
)

// TestParseErrorsEnviron checks error texts against golden files as
// TestParseErrors does, with an environment: a malformed broker URL names
// broker, missing keys say required, a misspelled variable names the
// nearest real one. Run with -update to rewrite.
func TestParseErrorsEnviron(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
	}{
		{"broker", nil},
		{"required", nil},
		{"env", []string{
			"BUSMESH_BROKR=nats://127.0.0.1:4222",
			"BUSMESH_AMBASADOR_TIMEOUT=5s",
			"BUSMESH_TEST_NATS=127.0.0.1:4222", // the test suites' own: not a key, not a problem
			// A deployment's own variables, far from every key: not problems.
			"BUSMESH_RABBITMQ_PASSWORD=secret",
			"BUSMESH_ADMIN_TOKEN=t0ken",
			"BUSMESH_AMBASSADOR_HTTP=127.0.0.1:15009",
			// Kubernetes's service links of a Service named busmesh.
			"BUSMESH_PORT=tcp://10.0.0.7:4222",
			"BUSMESH_PORT_4222_TCP=tcp://10.0.0.7:4222",
			"BUSMESH_PORT_4222_TCP_PORT=4222",
			"BUSMESH_SERVICE_HOST=10.0.0.7",
			"BUSMESH_SERVICE_PORT=4222",
			"PATH=/usr/bin",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = config.ParseEnviron(tt.name+".yaml", data, tt.environ)
			if err == nil {
				t.Fatal("ParseEnviron = nil, want an error")
			}
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644)
			}
			want, _ := os.ReadFile(golden)
			if diff := cmp.Diff(err.Error()+"\n", string(want)); diff != "" {
				t.Errorf("error text (-got +want):\n%s", diff)
			}
		})
	}
}

func TestParseEnvironApplies(t *testing.T) {
	c, err := config.ParseEnviron("x.yaml", []byte("ambassador:\n  http: 127.0.0.1:15001\n"),
		[]string{"BUSMESH_AMBASSADOR_TIMEOUT=5s", "BUSMESH_BROKER=nats://127.0.0.1:4222", "BUSMESH_TEST_KAFKA_DEBUG=1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Broker != "nats://127.0.0.1:4222" || c.Ambassador.Timeout.D().String() != "5s" {
		t.Errorf("broker %q, timeout %v: want the overrides", c.Broker, c.Ambassador.Timeout.D())
	}
}

// TestBrokerURLs: the broker URL is checked before anything connects.
func TestBrokerURLs(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" is valid
	}{
		{"embedded", ""},
		{"embedded://127.0.0.1:4222", ""},
		{"nats://127.0.0.1:4222", ""},
		{"amqp://guest:guest@127.0.0.1:5672/", ""},
		{"kafka://127.0.0.1:9092,127.0.0.1:9093", ""},
		{"kafka://h1", ""},
		{"nats//127.0.0.1:4222", `did you mean "nats://127.0.0.1:4222"?`},
		{"nats:/127.0.0.1:4222", `did you mean "nats://127.0.0.1:4222"?`},
		{"127.0.0.1:4222", "is not a broker URL"},
		{"nats://", "names no host"},
		{"nats://:4222", "names no host"},
		{"nats://127.0.0.1:99999", `port "99999" is not a port`},
		{"kafka://h1:9092,h2:x", `invalid port ":x"`},
		{"amqp://guest:hunter2@127.0.0.1:0/", `port "0" is not a port`},
		{"", "empty broker URL"},
	}
	for _, tt := range tests {
		c := config.Default()
		c.Broker = tt.url
		c.Ambassador = config.NewAmbassador()
		c.Ambassador.HTTP = "127.0.0.1:15001"
		c.Normalize()
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("broker %q: %v, want valid", tt.url, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "broker: ")):
			t.Errorf("broker %q: %v, want an error on broker saying %q", tt.url, err, tt.want)
		case err != nil && strings.Contains(err.Error(), "hunter2"):
			t.Errorf("broker %q: the error shows the password: %v", tt.url, err)
		}
	}
}

func TestEnvNames(t *testing.T) {
	names := config.EnvNames()
	for _, want := range []string{"BUSMESH_BROKER", "BUSMESH_AMBASSADOR_TIMEOUT", "BUSMESH_ADAPTER_HEALTH_INTERVAL", "BUSMESH_DISCOVERY_INTERVAL"} {
		if !strings.Contains(strings.Join(names, " "), want) {
			t.Errorf("EnvNames() has no %s: %v", want, names)
		}
	}
	for _, n := range names {
		if strings.Contains(n, "UPSTREAMS") || strings.Contains(n, "LABELS") {
			t.Errorf("EnvNames() has %s: maps are not overridable", n)
		}
	}
}

func TestAdapterHost(t *testing.T) {
	for host, want := range map[string]string{
		"":       "",
		"caller": "",
		"target": "",
		"own":    `adapter.host: "own" is not a choice (allowed: caller`,
	} {
		c := config.Default()
		c.Adapter = config.NewAdapter()
		c.Adapter.Service = "orders"
		c.Adapter.Target = "http://127.0.0.1:8080"
		c.Adapter.Host = host
		c.Normalize()
		err := c.Validate()
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("host %q: %v, want %q", host, err, want)
		}
	}
}

func TestTargets(t *testing.T) {
	tests := []struct{ target, want string }{
		{"http://127.0.0.1:8080", ""},
		{"grpc://127.0.0.1:9090", ""},
		{"https://app.internal", ""},
		{"", "adapter.target: required"},
		{"http://127.0.0.1:99999", `"http://127.0.0.1:99999" has no valid port (1-65535)`},
		{"127.0.0.1:8080", "is not an application URL"},
		{"ftp://127.0.0.1:21", `has scheme "ftp"`},
	}
	for _, tt := range tests {
		c := config.Default()
		c.Adapter = config.NewAdapter()
		c.Adapter.Service = "orders"
		c.Adapter.Target = tt.target
		c.Normalize()
		err := c.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("target %q: %v, want %q", tt.target, err, tt.want)
		}
	}
}
