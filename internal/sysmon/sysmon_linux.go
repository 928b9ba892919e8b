package sysmon

import (
	"os"
	"strings"
	"syscall"
)

// Reexec replaces the process with a new run of the same executable, with
// the same arguments and environment plus Setting in GODEBUG, unless
// GODEBUG names schedtrace already (as it does in the new run). It returns
// only when it did not restart: nil then, or the reason the restart
// failed (the process goes on as it is). Call it first, before the
// process starts anything: what was open (other than standard input,
// output and error, which Go does not close on exec) is gone in the new
// run.
func Reexec() error {
	godebug, ok := withSetting(os.Getenv("GODEBUG"))
	if !ok {
		return nil
	}
	env := append(os.Environ(), "GODEBUG="+godebug)
	// /proc/self/exe is the file this process runs, even if its path has
	// since been replaced (an upgrade in place) or the process was started
	// through a relative one.
	return syscall.Exec("/proc/self/exe", os.Args, dedupEnv(env))
}

// dedupEnv keeps the last of each variable, as os/exec does: the GODEBUG
// appended wins over the one inherited.
func dedupEnv(env []string) []string {
	last := make(map[string]int, len(env))
	for i, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		last[k] = i
	}
	out := env[:0:0]
	for i, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if last[k] == i {
			out = append(out, kv)
		}
	}
	return out
}
