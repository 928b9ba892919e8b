package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImageBuild: the binary the container image ships (-tags
// nodev,grpcnotrace: no busmesh dev, no embedded NATS server, no grpc-go
// x/net/trace) carries calls as a sidecar on every broker, and says what
// it lacks instead of failing obscurely: busmesh dev and the embedded
// broker are refused, naming the build.
func TestImageBuild(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "busmesh-image")
	cmd := exec.Command("go", "build", "-tags", "nodev,grpcnotrace", "-o", bin, "../../cmd/busmesh")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags nodev,grpcnotrace: %v\n%s", err, out)
	}

	dev := exec.Command(bin, "dev", "--admin", freePort(t), "--http", freePort(t), "--service-port", freePort(t))
	out, err := dev.CombinedOutput()
	if code := dev.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(string(out), "-tags nodev") {
		t.Errorf("busmesh dev in the image build: exit %d, %q; want exit 1 naming -tags nodev", code, out)
	}
	config := filepath.Join(t.TempDir(), "embedded.yaml")
	if err := os.WriteFile(config, []byte("id: image-check\nbroker: embedded\nadmin: "+freePort(t)+
		"\nadapter:\n  service: x\n  target: http://127.0.0.1:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(bin, "check", "--config", config)
	out, err = check.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "has no NATS server in it") {
		t.Errorf("busmesh check of an embedded broker in the image build: %v, %q; want a failure saying why", err, out)
	}

	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			m := startStreamMesh(t, b, bin, streamApp())
			client := &http.Client{Timeout: 30 * time.Second}
			resp, err := client.Get("http://" + m.port + "/sized?n=100000")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || len(body) != 100000 {
				t.Fatalf("a call through sidecars of the image build: %d, %d bytes, %v", resp.StatusCode, len(body), err)
			}
		})
	}
}
