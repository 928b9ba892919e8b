package sysmon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// helperEnv makes the test binary the process under test instead: it
// prints what it is (process ID, name, GODEBUG, argument count), restarts
// through Reexec, and prints it again in the new run (only there, when it
// restarted). With helperEnv=panic the run that does not restart then
// panics, to show what the runtime made of GODEBUG.
const helperEnv = "SYSMON_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		comm, _ := os.ReadFile("/proc/self/comm")
		fmt.Printf("run pid=%d comm=%s godebug=%q args=%d\n", os.Getpid(), strings.TrimSpace(string(comm)), os.Getenv("GODEBUG"), len(os.Args))
		if err := Reexec(); err != nil {
			fmt.Printf("error %v\n", err)
		}
		if mode == "panic" {
			panic("the helper's crash")
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper runs the test binary as the process under test, with GODEBUG
// set to godebug ("-": unset), and returns what it printed.
func helper(t *testing.T, mode, godebug string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "GODEBUG=")
	}), helperEnv+"="+mode)
	if godebug != "-" {
		cmd.Env = append(cmd.Env, "GODEBUG="+godebug)
	}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("GODEBUG %s: the helper did not end within 20s (a restart loop?):\n%s", godebug, out)
	}
	return string(out), err
}

func TestReexec(t *testing.T) {
	for _, c := range []struct {
		godebug string // "-": unset
		want    []string
	}{
		{"-", []string{`godebug=""`, `godebug="` + Setting + `"`}},
		{"http2client=0", []string{`godebug="http2client=0"`, `godebug="http2client=0,` + Setting + `"`}},
		{"schedtrace=0", []string{`godebug="schedtrace=0"`}},
		{"scheddetail=1", []string{`godebug="scheddetail=1"`}},
	} {
		out, err := helper(t, "run", c.godebug)
		if err != nil {
			t.Fatalf("GODEBUG %s: %v\n%s", c.godebug, err, out)
		}
		var runs []string
		for line := range strings.Lines(out) {
			if strings.HasPrefix(line, "run ") || strings.HasPrefix(line, "error ") {
				runs = append(runs, strings.TrimSpace(line))
			}
		}
		if len(runs) != len(c.want) {
			t.Fatalf("GODEBUG %s: %d runs, want %d:\n%s", c.godebug, len(runs), len(c.want), out)
		}
		first := strings.Fields(runs[0])
		for i, run := range runs {
			// The same process, under the same name, with the same
			// arguments; GODEBUG as wanted.
			f := strings.Fields(run)
			if f[0] != "run" || f[1] != first[1] || f[2] != first[2] || f[3] != c.want[i] || f[4] != "args=3" {
				t.Errorf("GODEBUG %s: run %d printed %q; want the same %s and %s, %s and args=3", c.godebug, i, run, first[1], first[2], c.want[i])
			}
		}
	}
}

// TestRuntimeTakesSetting: the restarted runtime runs with a scheduler
// trace on, which a crash shows (the trace's detailed form before the
// panic message); a setting the runtime ignored would show nothing.
func TestRuntimeTakesSetting(t *testing.T) {
	out, err := helper(t, "panic", "-")
	if err == nil {
		t.Fatalf("the helper did not crash:\n%s", out)
	}
	sched, crash := strings.Index(out, "\nSCHED "), strings.Index(out, "panic: the helper's crash")
	if sched < 0 || crash < 0 || sched > crash {
		t.Fatalf("want a SCHED trace, then the panic:\n%s", out)
	}
	out, _ = helper(t, "panic", "schedtrace=0")
	if strings.Contains(out, "SCHED ") {
		t.Errorf("with GODEBUG=schedtrace=0 the crash printed a scheduler trace:\n%s", out)
	}
}
