package sysmon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
)

// Reexec replaces the process with a new run of the same executable, with
// the same arguments and environment but for Setting added to GODEBUG,
// unless GODEBUG names schedtrace already (as it does in the new run). It
// returns only when it did not restart: nil then, or why the restart was
// not made (the process goes on as it is). Call it first, before the
// process starts anything: what was open (other than what it inherited,
// such as standard input, output and error) is gone in the new run.
func Reexec() error {
	godebug, ok := withSetting(os.Getenv("GODEBUG"))
	if !ok {
		return nil
	}
	path, err := self()
	if err != nil {
		return err
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODEBUG=") })
	if err := syscall.Exec(path, os.Args, append(env, "GODEBUG="+godebug)); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

// self returns the path the process was started through (os.Args[0],
// looked up in PATH as the shell did), once it has checked that the path
// still leads to the file running. Executing that path, not
// /proc/self/exe, keeps the process's name (comm, which ps, top and
// pgrep show) what it was. A path that leads elsewhere — the binary
// replaced in place since, or a process started through the dynamic
// loader (ld.so busmesh ...) — is an error: no restart.
func self() (string, error) {
	path, err := exec.LookPath(os.Args[0])
	if err != nil {
		return "", fmt.Errorf("find the executable: %w", err)
	}
	running, err := os.Stat("/proc/self/exe")
	if err != nil {
		return "", fmt.Errorf("find the executable: %w", err)
	}
	found, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("find the executable: %w", err)
	}
	if !os.SameFile(running, found) {
		return "", errors.New("find the executable: " + path + " is not the file this process runs")
	}
	return path, nil
}
