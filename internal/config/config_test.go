package config_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/busmesh/busmesh/internal/config"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func noEnv(string) (string, bool) { return "", false }

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParseGood(t *testing.T) {
	data, err := os.ReadFile("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := config.Parse("good.yaml", data, noEnv)
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	want := &config.Config{
		Mesh:      "default",
		ID:        "web-1",
		Broker:    "nats://127.0.0.1:4222",
		Admin:     "127.0.0.1:15000",
		Procs:     1,
		Log:       config.Log{Level: "info", Format: "json", Access: config.AccessLog{Sample: 1}},
		Discovery: config.Discovery{Interval: config.Duration(config.DefaultInterval)},
		Tracing:   config.Tracing{Protocol: "grpc", Sampler: config.SamplerParentRatio, Ratio: 1},
		Ambassador: &config.Ambassador{
			Service:      "web",
			HTTP:         "127.0.0.1:15001",
			Upstreams:    map[string]string{"orders": "127.0.0.1:9001"},
			Timeout:      config.Duration(2 * time.Second),
			IdleTimeout:  config.Timeout(config.DefaultIdleTimeout),
			MaxBodyBytes: 1 << 20,
			LB:           config.LBQueue,
			Services:     map[string]*config.ServicePolicy{"orders": {LB: config.LBDirect, PreferZone: "eu-1"}},
		},
		Adapter: &config.Adapter{
			Service:     "web",
			Instance:    "web-1",
			Version:     "v2",
			Zone:        "eu-1",
			Labels:      map[string]string{"team": "web"},
			Target:      "http://127.0.0.1:8080",
			Concurrency: config.DefaultConcurrency,
			Outlier:     config.NewOutlier(),
			Health: &config.Health{HTTP: "/healthz", Interval: config.Duration(500 * time.Millisecond),
				Timeout: config.Duration(time.Second), UnhealthyAfter: 2, HealthyAfter: 1},
		},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Parse (-got +want):\n%s", diff)
	}
}

// TestParseErrors checks the whole error text against a golden file: every
// problem, with key, value and what is allowed. Run with -update to rewrite.
func TestParseErrors(t *testing.T) {
	for _, name := range []string{"bad"} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = config.Parse(name+".yaml", data, noEnv)
			if err == nil {
				t.Fatal("Parse = nil, want an error")
			}
			golden := filepath.Join("testdata", name+".golden")
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

func TestEnvOverrides(t *testing.T) {
	data := []byte("ambassador:\n  http: 127.0.0.1:15001\n")
	c, err := config.Parse("x.yaml", data, envMap(map[string]string{
		"BUSMESH_BROKER":             "amqp://guest:guest@127.0.0.1:5672/",
		"BUSMESH_AMBASSADOR_TIMEOUT": "5s",
		"BUSMESH_ADAPTER_TARGET":     "http://ignored", // no adapter section: not created
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Broker != "amqp://guest:guest@127.0.0.1:5672/" {
		t.Errorf("Broker = %q, want the BUSMESH_BROKER value", c.Broker)
	}
	if c.Ambassador.Timeout.D() != 5*time.Second {
		t.Errorf("Ambassador.Timeout = %v, want 5s", c.Ambassador.Timeout.D())
	}
	if c.Adapter != nil {
		t.Errorf("Adapter = %+v, want nil: an override must not create a section", c.Adapter)
	}

	_, err = config.Parse("x.yaml", data, envMap(map[string]string{"BUSMESH_AMBASSADOR_TIMEOUT": "soon"}))
	want := `config x.yaml: 1 problem
  ambassador.timeout: "soon" (from BUSMESH_AMBASSADOR_TIMEOUT) is not a duration (example: "30s")`
	if err == nil || err.Error() != want {
		t.Errorf("Parse with a bad override = %v, want %q", err, want)
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    config.ByteSize
		wantErr bool
	}{
		{"4194304", 4 << 20, false},
		{"4MiB", 4 << 20, false},
		{"512KiB", 512 << 10, false},
		{"1MB", 1000000, false},
		{"10 B", 10, false},
		{"-1", 0, true},
		{"lots", 0, true},
		{"4XB", 0, true},
	}
	for _, tt := range tests {
		var got config.ByteSize
		err := got.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if b, _ := config.ByteSize(4 << 20).MarshalText(); string(b) != "4MiB" {
		t.Errorf("MarshalText(4MiB) = %q", b)
	}
}

func TestEmptyFileNeedsASection(t *testing.T) {
	_, err := config.Parse("empty.yaml", nil, noEnv)
	want := "config empty.yaml: 1 problem\n  (top level): no ambassador or adapter section: a sidecar needs at least one"
	if err == nil || err.Error() != want {
		t.Errorf("Parse(empty) = %v, want %q", err, want)
	}
}

// TestStreamSettings: per-service deadlines (or none), idle timeouts and
// caps, falling back to the ambassador's; caps are off by default.
func TestStreamSettings(t *testing.T) {
	yaml := `ambassador:
  http: 127.0.0.1:15001
  timeout: 10s
  max_response_bytes: 8MiB
  services:
    events:
      timeout: none
      idle_timeout: 1m
      max_body_bytes: 1MiB
    files: {}
adapter:
  service: events
  target: http://127.0.0.1:8080
`
	c, err := config.Parse("streams.yaml", []byte(yaml), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.Ambassador.MaxBodyBytes != 0 || c.Adapter.MaxBodyBytes != 0 {
		t.Errorf("default caps = %d (ambassador), %d (adapter); want none", c.Ambassador.MaxBodyBytes, c.Adapter.MaxBodyBytes)
	}
	ev, files := c.Ambassador.Policy("events"), c.Ambassador.Policy("files")
	want := []struct {
		name      string
		got, want any
	}{
		{"events timeout", ev.Timeout, config.NoTimeout},
		{"events timeout duration", ev.Timeout.D(), time.Duration(0)},
		{"events idle", ev.IdleTimeout.D(), time.Minute},
		{"events request cap", ev.MaxBodyBytes, config.ByteSize(1 << 20)},
		{"events response cap", ev.MaxResponseBytes, config.ByteSize(8 << 20)},
		{"files timeout", files.Timeout.D(), 10 * time.Second},
		{"files idle", files.IdleTimeout.D(), config.DefaultIdleTimeout},
		{"files request cap", files.MaxBodyBytes, config.ByteSize(0)},
	}
	for _, w := range want {
		if w.got != w.want {
			t.Errorf("%s = %v, want %v", w.name, w.got, w.want)
		}
	}
	_, err = config.Parse("bad.yaml", []byte("ambassador:\n  http: 127.0.0.1:15001\n  idle_timeout: 0s\n"), noEnv)
	if err == nil || !strings.Contains(err.Error(), `ambassador.idle_timeout: "0s" is not a positive duration or "none"`) {
		t.Errorf("idle_timeout: 0s gave %v, want it refused naming the key and what is allowed", err)
	}
}
