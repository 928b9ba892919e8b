package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// machine describes where and when a run happened.
type machine struct {
	date      time.Time
	nproc     int
	model     string
	kernel    string
	goVersion string
	commit    string
	loadStart string
	loadEnd   string
}

// readMachine reads /proc and asks git; what it cannot learn is "unknown".
func readMachine() *machine {
	m := &machine{
		date:      time.Now().UTC(),
		nproc:     runtime.NumCPU(),
		model:     "unknown",
		kernel:    "unknown",
		goVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		commit:    "unknown",
		loadStart: readLoadAvg(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = "Linux " + strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.commit += " with uncommitted changes"
		}
	}
	return m
}

// readLoadAvg returns the 1-, 5- and 15-minute load averages.
func readLoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
