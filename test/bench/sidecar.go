package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// readyTimeout bounds a sidecar's start, from exec to /readyz saying 200.
const readyTimeout = 20 * time.Second

// sidecarConfig is the YAML of a benchmark sidecar: an ambassador with a
// per-service HTTP port or a gRPC port, or an adapter. Logs are at warn so
// that logging costs nothing per call.
const sidecarConfig = `# busmesh bench: {{.Name}}
id: {{.ID}}
broker: {{.Broker}}
admin: {{.Admin}}
log:
  level: warn
{{- if .Cert}}
identity:
  cert: {{.Cert}}
  key: {{.Key}}
  ca: {{.CA}}
{{- end}}
{{- if .Target}}
adapter:
  service: {{.Service}}
  target: {{.Target}}
{{- else}}
ambassador:
  service: bench-client
{{- if .GRPC}}
  grpc: {{.Listen}}
{{- else}}
  upstreams:
    {{.Service}}: {{.Listen}}
{{- end}}
{{- end}}
`

// sidecarSpec fills sidecarConfig.
type sidecarSpec struct {
	Name    string // process name in the report: "mesh-http-nats ambassador"
	ID      string // sidecar id on the bus
	Broker  string // broker URL
	Admin   string // admin address, for /readyz and /debug/pprof/
	Service string // the service called
	Target  string // adapter: the application URL; empty for an ambassador
	GRPC    bool   // ambassador: a gRPC port instead of a per-service HTTP port
	Listen  string // ambassador: its port
	// Cert, Key and CA are the sidecar's identity files; empty runs
	// without security.
	Cert, Key, CA string
}

// sidecar is a running `busmesh sidecar`.
type sidecar struct {
	proc  *process
	admin string
}

// errUnknownScheme reports a busmesh binary without the broker's backend.
var errUnknownScheme = errors.New("the busmesh binary does not register this broker's URL scheme")

// buildBusmesh builds ./cmd/busmesh of the module this runs in into dir,
// as the container image builds it (deploy/docker/Dockerfile): static,
// without symbol tables, tags nodev and grpcnotrace, so that the memory
// measured is the memory shipped (an idle NATS sidecar: 19.7–19.9 MB,
// against 27.5–27.8 MB for a default build; README, "Benchmark").
func buildBusmesh(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the busmesh module: run from the repository")
	}
	bin := filepath.Join(dir, "busmesh")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "nodev,grpcnotrace", "-ldflags", "-s -w", "-o", bin, "./cmd/busmesh")
	cmd.Dir = filepath.Dir(gomod)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/busmesh: %w\n%s", err, out)
	}
	return bin, nil
}

// startSidecar writes spec's config and starts the sidecar, returning once
// its admin port says ready.
func startSidecar(ctx context.Context, sup *supervisor, bin string, spec sidecarSpec) (*sidecar, error) {
	var buf strings.Builder
	tmpl := template.Must(template.New("sidecar").Parse(sidecarConfig))
	if err := tmpl.Execute(&buf, spec); err != nil {
		return nil, fmt.Errorf("config of %s: %w", spec.Name, err)
	}
	file := sup.path(strings.ReplaceAll(spec.Name, " ", "-") + ".yaml")
	if err := os.WriteFile(file, []byte(buf.String()), 0o644); err != nil {
		return nil, fmt.Errorf("write config of %s: %w", spec.Name, err)
	}
	p, err := sup.start(spec.Name, bin, "sidecar", "--config", file)
	if err != nil {
		return nil, err
	}
	s := &sidecar{proc: p, admin: spec.Admin}
	if err := s.waitReady(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// waitReady polls /readyz until it answers 200.
func (s *sidecar) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(readyTimeout)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get("http://" + s.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if s.proc.exited() {
			log := s.proc.tail()
			if strings.Contains(log, "unknown broker scheme") {
				return fmt.Errorf("%s: %w:\n%s", s.proc.name, errUnknownScheme, log)
			}
			return fmt.Errorf("%s exited at start (%v):\n%s", s.proc.name, s.proc.err, log)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v:\n%s", s.proc.name, readyTimeout, s.proc.tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freeAddr returns a loopback address nobody listens on now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
