package e2e

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSidecarStartErrors: a bad config and an unreachable broker stop the
// sidecar at once with a message that says what and why.
func TestSidecarStartErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	tests := []struct {
		name     string
		config   string
		env      []string
		wantCode int
		want     []string
	}{
		{"bad config", "ambassador:\n  timeout: soon\n  htp: 127.0.0.1:1\n", nil, 2,
			[]string{`ambassador.timeout: "soon" is not a duration`, `ambassador.htp: unknown key; did you mean "http"?`}},
		{"unknown scheme", "broker: mqtt://127.0.0.1:1883\nambassador:\n  http: 127.0.0.1:0\n", nil, 2, // a config error: found before connecting
			[]string{`unknown broker scheme "mqtt"`, "amqp", "kafka", "nats"}},
		{"unreachable broker", "ambassador:\n  http: 127.0.0.1:0\n", []string{"BUSMESH_BROKER=amqp://guest:hunter2@" + dead + "/"}, 1,
			[]string{dead, "xxxxx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(binary, "sidecar", "--config", write(tt.name+".yaml", tt.config))
			cmd.Env = append(os.Environ(), tt.env...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tt.wantCode {
				t.Fatalf("exit %v, want code %d\n%s", err, tt.wantCode, out)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to fail, want under 5s", d)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if strings.Contains(string(out), "hunter2") {
				t.Errorf("output shows the password:\n%s", out)
			}
		})
	}
}
