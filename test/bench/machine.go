package main

import (
	"debug/buildinfo"
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

// notePrebuilt records that the sidecars run bin, a busmesh built
// elsewhere (-busmesh): the commit measured is the one bin was built from,
// which the tree the bench runs in says nothing about. It is bin's VCS
// stamp when it has one (a build without -buildvcs=false, inside the
// repository).
func (m *machine) notePrebuilt(bin string) {
	if rev := binaryRevision(bin); rev != "" {
		m.commit = rev + " (" + bin + "'s VCS stamp)"
		return
	}
	unknown := "unknown: " + bin + " carries no VCS stamp (or cannot be read)"
	if m.commit != "unknown" {
		unknown += " (the bench's own tree is at " + m.commit + ")"
	}
	m.commit = unknown
}

// binaryRevision returns the short commit a Go binary was built from, with
// " with uncommitted changes" when its tree was modified, or "". Go's stamp
// counts untracked files as changes, where readMachine does not, so one
// tree can read clean built by the bench and modified as a -busmesh binary.
func binaryRevision(bin string) string {
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		return ""
	}
	var rev string
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if rev != "" && modified {
		rev += " with uncommitted changes"
	}
	return rev
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
