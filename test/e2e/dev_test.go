package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/testutil"
)

// TestDev runs `busmesh dev` as a newcomer would and runs the curl command
// it prints, as pasted, on each broker the dev mode offers.
func TestDev(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is not installed; .ci/run installs it") // in CI a missing tool is a failure
		}
		t.Skip("curl is not installed; the test runs the printed command with it")
	}
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			// Its own id: dev meshes of other runs may share the RabbitMQ.
			cmd := exec.Command(binary, "dev", "--broker", b.name, "--id", unique("dev"),
				"--http", freePort(t), "--service-port", freePort(t), "--admin", freePort(t))
			if b.name == "rabbitmq" {
				cmd.Env = append(cmd.Environ(), "BUSMESH_BROKER="+b.url)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			stderr := &testutil.Buffer{}
			cmd.Stderr = stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			lines := make(chan string, 64)
			go func() {
				s := bufio.NewScanner(stdout)
				for s.Scan() {
					lines <- s.Text()
				}
				close(lines)
			}()
			defer func() {
				cmd.Process.Signal(syscall.SIGINT)
				go func() { exited <- cmd.Wait() }()
				select {
				case err := <-exited:
					if err != nil {
						t.Errorf("busmesh dev exited with %v after SIGINT\n%s", err, stderr.String())
					}
				case <-time.After(15 * time.Second):
					cmd.Process.Kill()
					t.Errorf("busmesh dev did not stop within 15s of SIGINT")
				}
			}()
			var curl []string
			timeout := time.After(30 * time.Second)
			for done := false; !done; {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("busmesh dev ended its output without printing a curl command\n%s", stderr.String())
					}
					if c, found := strings.CutPrefix(strings.TrimSpace(l), "curl "); found {
						curl = append(curl, "curl -sS --fail "+c)
					}
					done = strings.HasPrefix(l, "Press Ctrl-C")
				case <-timeout:
					t.Fatalf("busmesh dev printed no curl command within 30s\n%s", stderr.String())
				}
			}
			if len(curl) == 0 {
				t.Fatal("busmesh dev printed no curl command")
			}
			out, err := exec.Command("sh", "-c", curl[0]).CombinedOutput()
			if err != nil {
				t.Fatalf("the printed command %q failed: %v\n%s", curl[0], err, out)
			}
			var hello map[string]any
			if err := json.Unmarshal(out, &hello); err != nil || hello["message"] == nil {
				t.Errorf("the printed command answered %q, want the demo service's JSON", out)
			}
			for _, c := range curl[1:] {
				if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
					t.Errorf("the printed command %q failed: %v\n%s", c, err, out)
				}
			}
		})
	}
}
