package sysmon

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// helperEnv makes the test binary the process under test instead: it
// prints its process ID and GODEBUG, restarts through Reexec, and prints
// them again in the new run (only there, when it restarted).
const helperEnv = "SYSMON_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		fmt.Printf("run pid=%d godebug=%q args=%d\n", os.Getpid(), os.Getenv("GODEBUG"), len(os.Args))
		if err := Reexec(); err != nil {
			fmt.Printf("error %v\n", err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestReexec(t *testing.T) {
	for _, c := range []struct {
		godebug string // "-": unset
		want    []string
	}{
		{"-", []string{`godebug=""`, `godebug="` + Setting + `"`}},
		{"http2client=0", []string{`godebug="http2client=0"`, `godebug="http2client=0,` + Setting + `"`}},
		{"schedtrace=0", []string{`godebug="schedtrace=0"`}},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
		cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "GODEBUG=")
		}), helperEnv+"=1")
		if c.godebug != "-" {
			cmd.Env = append(cmd.Env, "GODEBUG="+c.godebug)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("GODEBUG %s: %v\n%s", c.godebug, err, out)
		}
		var runs []string
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "run ") || strings.HasPrefix(line, "error ") {
				runs = append(runs, strings.TrimSpace(line))
			}
		}
		if len(runs) != len(c.want) {
			t.Fatalf("GODEBUG %s: %d runs, want %d:\n%s", c.godebug, len(runs), len(c.want), out)
		}
		pid := strings.Fields(runs[0])[1]
		for i, run := range runs {
			f := strings.Fields(run)
			if f[0] != "run" || f[1] != pid || f[2] != c.want[i] || f[3] != fmt.Sprintf("args=%d", 3) {
				t.Errorf("GODEBUG %s: run %d printed %q; want the same %s, %s and args=3", c.godebug, i, run, pid, c.want[i])
			}
		}
	}
}
