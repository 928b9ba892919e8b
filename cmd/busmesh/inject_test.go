package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// runInject runs `busmesh inject args...` with stdin and returns what it
// wrote to stdout and stderr.
func runInject(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRootCmd()
	var out, errOut bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append([]string{"inject"}, args...))
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

const workload = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations:
        busmesh.io/service: web
        busmesh.io/port: "8080"
        busmesh.io/upstreams: orders:9001
    spec:
      containers:
      - name: app
        image: example.org/web:1
`

func TestInjectCommandTwiceIsOnce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(file, []byte(workload), 0o644); err != nil {
		t.Fatal(err)
	}
	once, stderr, err := runInject(t, "", "--broker", "nats://nats:4222", "--image", "busmesh:v1", file)
	if err != nil {
		t.Fatalf("inject: %v", err)
	}
	if want := file + ": deployment/web injected\n"; stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
	for _, want := range []string{"image: busmesh:v1", "value: nats://nats:4222", "restartPolicy: Always"} {
		if !strings.Contains(once, want) {
			t.Errorf("output lacks %q:\n%s", want, once)
		}
	}
	twice, _, err := runInject(t, once, "-q", "--broker", "nats://nats:4222", "--image", "busmesh:v1", "-")
	if err != nil {
		t.Fatalf("inject of the injected: %v", err)
	}
	if diff := cmp.Diff(twice, once); diff != "" {
		t.Errorf("inject twice (-got) vs once (+want):\n%s", diff)
	}
}

func TestInjectCommandErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte(workload), 0o644); err != nil {
		t.Fatal(err)
	}
	// The second document is the broken one; the broker is missing too.
	if err := os.WriteFile(bad, []byte(workload+"---\n"+strings.Replace(workload, "name: web\n", "name: api\n", 1)+"        ports: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"not YAML", "", []string{"--broker", "nats://nats:4222", good, bad}, bad + ": document 2: not YAML"},
		{"missing broker", workload, []string{"-"}, "standard input: document 1 (Deployment/web): busmesh.io/broker is missing"},
		{"not a workload", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  annotations: {busmesh.io/service: web}\n", []string{"--broker", "nats://x:4222"},
			"standard input: document 1 (ConfigMap/cm): cannot inject a ConfigMap"},
		{"no such file", "", []string{filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, _, err := runInject(t, tt.stdin, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("inject error = %v, want one containing %q", err, tt.want)
			}
			if stdout != "" {
				t.Errorf("inject wrote output despite the error:\n%s", stdout)
			}
		})
	}
}
