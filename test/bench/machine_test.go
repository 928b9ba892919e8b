package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinaryRevision: a prebuilt busmesh is reported by the commit it was
// built from, marked when its tree had changes, and as unknown when the
// build carries no VCS stamp, whatever tree the bench runs in.
func TestBinaryRevision(t *testing.T) {
	// The repository and the binaries apart: Go's stamp counts untracked
	// files as changes, so a binary built into the tree would mark the
	// next build modified.
	dir, bin := t.TempDir(), t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		// Hermetic: no user or system git config (signing, hooks), no
		// workspace, no GOFLAGS (this machine's sets -buildvcs=false).
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@example.com",
			"GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@example.com",
			"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GOWORK=off", "GOFLAGS=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module stamped\n\ngo 1.26\n")
	write("main.go", "package main\n\nfunc main() {}\n")
	run("git", "init", "-q")
	run("git", "add", ".")
	run("git", "commit", "-q", "-m", "one")
	head := run("git", "rev-parse", "--short=7", "HEAD")

	clean := filepath.Join(bin, "clean")
	run("go", "build", "-buildvcs=true", "-o", clean, ".")
	if got := binaryRevision(clean); got != head {
		t.Errorf("clean build: %q, want %q", got, head)
	}
	write("main.go", "package main\n\nfunc main() { println() }\n")
	dirty := filepath.Join(bin, "dirty")
	run("go", "build", "-buildvcs=true", "-o", dirty, ".")
	if got, want := binaryRevision(dirty), head+" with uncommitted changes"; got != want {
		t.Errorf("modified tree: %q, want %q", got, want)
	}
	unstamped := filepath.Join(bin, "unstamped")
	run("go", "build", "-buildvcs=false", "-o", unstamped, ".")
	if got := binaryRevision(unstamped); got != "" {
		t.Errorf("unstamped build: %q, want none", got)
	}

	m := &machine{commit: "abc1234"}
	m.notePrebuilt(unstamped)
	if !strings.HasPrefix(m.commit, "unknown: ") || !strings.Contains(m.commit, "abc1234") {
		t.Errorf("unstamped binary reported as %q", m.commit)
	}
	m = &machine{commit: "abc1234"}
	m.notePrebuilt(clean)
	if !strings.HasPrefix(m.commit, head+" (") {
		t.Errorf("stamped binary reported as %q", m.commit)
	}
}
