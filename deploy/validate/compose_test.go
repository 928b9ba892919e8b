package validate

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/busmesh/busmesh/internal/config"
)

const composeDir = "../compose"

// loadCompose loads the compose project as `docker compose` would in
// deploy/compose, with env as the only environment besides .env.
func loadCompose(t *testing.T, env ...string) *types.Project {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	opts, err := cli.NewProjectOptions([]string{filepath.Join(composeDir, "compose.yaml")},
		cli.WithWorkingDirectory(composeDir),
		cli.WithEnv(env),
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(),
		cli.WithConsistency(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("load compose with %v: %v", env, err)
	}
	return p
}

// brokerPorts are the ports a broker URL of each scheme names.
var brokerSchemes = map[string]string{"nats": "nats", "rabbitmq": "amqp", "kafka": "kafka"}

func TestCompose(t *testing.T) {
	for _, broker := range []string{"", "nats", "rabbitmq", "kafka"} {
		name := broker
		var env []string
		if broker == "" {
			name, broker = ".env default", "nats"
		} else {
			env = []string{"BROKER=" + broker}
		}
		t.Run(name, func(t *testing.T) {
			p := loadCompose(t, env...)
			want := []string{"caller", "caller-busmesh", "hello", "hello-busmesh", broker}
			slices.Sort(want)
			if got := p.ServiceNames(); !slices.Equal(got, want) {
				t.Errorf("services started = %v, want %v (one broker)", got, want)
			}
			if got := slices.Sorted(func(yield func(string) bool) {
				for n := range p.DisabledServices {
					if !yield(n) {
						return
					}
				}
			}); len(got) != 2 || slices.Contains(got, broker) {
				t.Errorf("services not started = %v, want the two other brokers", got)
			}
			for _, s := range p.Services {
				if s.Image == "" {
					t.Errorf("service %s has no image", s.Name)
				}
			}
			configs := map[string]*config.Config{}
			for _, name := range []string{"hello-busmesh", "caller-busmesh"} {
				configs[name] = checkComposeSidecar(t, p, name, broker)
			}
			// The caller calls hello on its ambassador's port; the adapter
			// calls hello where it listens.
			caller := strings.Join(p.Services["caller"].Command, " ")
			if up := configs["caller-busmesh"].Ambassador.Upstreams["hello"]; !strings.Contains(caller, "http://"+up+"/") {
				t.Errorf("caller runs %q; it should call hello at its ambassador's %s", caller, up)
			}
			target, _ := url.Parse(configs["hello-busmesh"].Adapter.Target)
			if hello := strings.Join(p.Services["hello"].Command, " "); !strings.Contains(hello, "-listen=:"+target.Port()) {
				t.Errorf("hello runs %q; the adapter calls %s", hello, target)
			}
		})
	}
}

// checkComposeSidecar checks one busmesh service: its image is built from
// deploy/docker, it shares an existing application's network namespace,
// its broker URL names the broker service started, it waits for it, and
// its config file exists and passes the sidecar's own checks.
func checkComposeSidecar(t *testing.T, p *types.Project, name, broker string) *config.Config {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("no service %s", name)
	}
	if s.Image != "busmesh:dev" {
		t.Errorf("%s: image %q, want busmesh:dev (what make image builds)", name, s.Image)
	}
	if s.Build == nil {
		t.Fatalf("%s: no build section", name)
	}
	if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil || s.Build.Dockerfile != "deploy/docker/Dockerfile" {
		t.Errorf("%s: builds %s in %s: %v", name, s.Build.Dockerfile, s.Build.Context, err)
	}
	if _, err := os.Stat(filepath.Join(s.Build.Context, "go.mod")); err != nil {
		t.Errorf("%s: the build context %s is not the repository root: %v", name, s.Build.Context, err)
	}
	app, ok := strings.CutPrefix(s.NetworkMode, "service:")
	if _, exists := p.Services[app]; !ok || !exists {
		t.Errorf("%s: network_mode %q is not an application's namespace", name, s.NetworkMode)
	}
	rawURL := ""
	if v := s.Environment["BUSMESH_BROKER"]; v != nil {
		rawURL = *v
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != brokerSchemes[broker] {
		t.Fatalf("%s: BUSMESH_BROKER = %q, want a %s URL", name, rawURL, brokerSchemes[broker])
	}
	if _, started := p.Services[u.Hostname()]; !started {
		t.Errorf("%s: BUSMESH_BROKER names %s, which is no service started", name, u.Hostname())
	}
	dep, ok := s.DependsOn[u.Hostname()]
	if !ok {
		t.Errorf("%s: does not wait for %s", name, u.Hostname())
	}
	if dep.Condition == types.ServiceConditionHealthy && p.Services[u.Hostname()].HealthCheck == nil {
		t.Errorf("%s: waits for %s to be healthy, which has no healthcheck", name, u.Hostname())
	}
	for d := range s.DependsOn {
		_, started := p.Services[d]
		_, disabled := p.DisabledServices[d]
		if !started && !disabled {
			t.Errorf("%s: depends on %s, which the file does not have", name, d)
		}
	}
	if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
		t.Errorf("%s: read_only %v cap_drop %v, want a read-only root and no capabilities", name, s.ReadOnly, s.CapDrop)
	}
	var file string
	for _, v := range s.Volumes {
		if v.Target == "/etc/busmesh/sidecar.yaml" {
			file = v.Source
		}
	}
	if !slices.Contains(s.Command, "/etc/busmesh/sidecar.yaml") || file == "" {
		t.Fatalf("%s: runs %q with config %q mounted", name, s.Command, file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	env := func(k string) (string, bool) { return rawURL, k == "BUSMESH_BROKER" }
	c, err := config.Parse(file, b, env)
	if err != nil {
		t.Fatalf("%s: the sidecar would refuse its config: %v", name, err)
	}
	if c.Broker != rawURL {
		t.Errorf("%s: broker %q, want %q", name, c.Broker, rawURL)
	}
	return c
}

func TestComposeKafkaIsKRaft(t *testing.T) {
	p := loadCompose(t, "BROKER=kafka")
	k := p.Services["kafka"]
	roles := k.Environment["KAFKA_PROCESS_ROLES"]
	if roles == nil || !strings.Contains(*roles, "controller") || !strings.Contains(*roles, "broker") {
		t.Errorf("kafka KAFKA_PROCESS_ROLES = %v, want broker,controller (KRaft)", roles)
	}
	for name, s := range p.AllServices() {
		if strings.Contains(strings.ToLower(name+s.Image), "zookeeper") {
			t.Errorf("service %s (%s): no ZooKeeper in KRaft mode", name, s.Image)
		}
		for k := range s.Environment {
			if strings.Contains(k, "ZOOKEEPER") {
				t.Errorf("service %s sets %s", name, k)
			}
		}
	}
}
