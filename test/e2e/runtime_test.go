package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/busmesh/busmesh/internal/sysmon"
)

// TestSidecarKeepsSysmonAwake: a sidecar runs with GODEBUG's schedtrace
// set (internal/sysmon), in the process that was started (the restart
// keeps its ID) and under its name, with its config read once from a
// pipe; a user's own schedtrace, the opt-out, is left alone.
func TestSidecarKeepsSysmonAwake(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	for _, c := range []struct {
		name, godebug, want string
	}{
		{"default", "", "GODEBUG=" + sysmon.Setting},
		{"others kept", "http2client=0", "GODEBUG=http2client=0," + sysmon.Setting},
		{"opted out", "schedtrace=0", "GODEBUG=schedtrace=0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			admin := freePort(t)
			config := fmt.Sprintf("id: %s\nbroker: %s\nadmin: %s\nadapter:\n  service: %s\n  target: http://127.0.0.1:1\n",
				unique("rt"), b.url, admin, unique("rt"))
			cmd := exec.Command(binary, "sidecar", "--config", "/dev/stdin")
			cmd.Stdin = strings.NewReader(config)
			cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
			if c.godebug != "" {
				cmd.Env = append(cmd.Env, "GODEBUG="+c.godebug)
			}
			s := launchSidecar(t, "callee", admin, cmd)

			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			var godebug []string
			for kv := range bytes.SplitSeq(environ, []byte{0}) {
				if bytes.HasPrefix(kv, []byte("GODEBUG=")) {
					godebug = append(godebug, string(kv))
				}
			}
			if len(godebug) != 1 || godebug[0] != c.want {
				t.Errorf("the sidecar's environment has %q; want [%s]", godebug, c.want)
			}
			// Still under its own name for ps, top and pgrep.
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.TrimSpace(string(comm)), filepath.Base(binary); got != want[:min(len(want), 15)] {
				t.Errorf("the sidecar's process name is %q; want %q", got, want)
			}
		})
	}
}
