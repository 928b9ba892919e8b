package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readmeBlocks returns the ```sh blocks of the README section whose heading
// starts with heading.
func readmeBlocks(t *testing.T, readme, heading string) []string {
	t.Helper()
	var blocks []string
	var in, code bool
	var cur strings.Builder
	for line := range strings.SplitSeq(readme, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, heading)
		case in && !code && line == "```sh":
			code = true
			cur.Reset()
		case in && code && line == "```":
			code = false
			blocks = append(blocks, cur.String())
		case in && code:
			cur.WriteString(line + "\n")
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("README has no ```sh block under %q", heading)
	}
	return blocks
}

// freshClone copies the repository's files (tracked, and new ones not
// ignored) to a new directory, as a clone would have them: no bin/, no
// build output.
func freshClone(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	dir := t.TempDir()
	for name := range strings.SplitSeq(strings.TrimRight(string(out), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, name))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		info, _ := os.Stat(filepath.Join(root, name))
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// isolated returns the command prefix that runs a script in a network
// namespace of its own, with only a loopback interface: the README's fixed
// ports (15000, 15001, 8080, ...) then cannot meet anything else on the
// machine. nil when the machine does not allow it.
func isolated() []string {
	if exec.Command("unshare", "-rn", "sh", "-c", "ip link set lo up").Run() != nil {
		return nil
	}
	return []string{"unshare", "-rn", "bash", "-c", "ip link set lo up && exec bash \"$0\"", "/dev/stdin"}
}

// script runs a bash script in dir (isolated when possible) and returns
// what it printed; processes it left in the background are stopped when
// the test ends.
func script(t *testing.T, dir, text string, env []string, timeout time.Duration) (string, error) {
	t.Helper()
	prefix := isolated()
	if prefix == nil {
		if os.Getenv("CI") == "" {
			t.Skip("cannot make a network namespace (unshare -rn): the README's fixed ports would meet other processes on this machine")
		}
		prefix = []string{"bash", "/dev/stdin"} // a CI machine runs nothing else on them
	}
	cmd := exec.Command(prefix[0], prefix[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(text)
	// A file, not a pipe: background processes keep their copy of the
	// output open, and Wait must not wait for them.
	outFile, err := os.Create(filepath.Join(t.TempDir(), "script.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd.Stdout, cmd.Stderr = outFile, outFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, the script's background processes end with the
	// test: SIGTERM lets the sidecars drain, SIGKILL ends the rest.
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		time.Sleep(500 * time.Millisecond)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	output := func() string {
		b, _ := os.ReadFile(outFile.Name())
		return string(b)
	}
	select {
	case err := <-done:
		return output(), err
	case <-time.After(timeout):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("the script did not end within %v:\n%s", timeout, output())
		return "", nil
	}
}

// goEnv is the environment of a script that builds busmesh offline: the
// module cache has what the tests were built with, and an install goes to
// its own folder, first on PATH.
func goEnv(t *testing.T) (env []string, gobin string) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	gobin = t.TempDir()
	return []string{"GOPROXY=off", "GOFLAGS=-mod=readonly", "GOBIN=" + gobin,
		"PATH=" + gobin + ":" + filepath.Dir(goBin) + ":" + os.Getenv("PATH"), "DISPLAY=", "WAYLAND_DISPLAY="}, gobin
}

// TestReadmeQuickStart pastes the README's quick start on a fresh clone,
// line by line: the install line, `busmesh dev` (left running, as in a
// first terminal), then each line of the second terminal; every line must
// succeed.
func TestReadmeQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(t, string(readme), "## Quick start")
	if len(blocks) < 2 {
		t.Fatalf("the quick start has %d ```sh blocks, want the first terminal's and the second's", len(blocks))
	}
	var s strings.Builder
	s.WriteString("set -u\nstep() { echo \"+ $1\"; bash -c \"$1\" || { echo \"FAILED (exit $?): $1\"; exit 1; }; }\n")
	// The first block is the two commands: the mesh (left running, as in
	// a first terminal) and the test suite, which is what runs this test
	// and is not run again inside it. The second terminal installs the
	// command and uses it.
	sawInstall, sawDev := false, false
	for i, b := range blocks {
		for _, line := range lines(b) {
			switch {
			case i == 0 && strings.Contains(line, "busmesh dev"):
				sawDev = true
				cmd := strings.TrimSpace(trailingComment.ReplaceAllString(line, ""))
				s.WriteString("echo '+ " + cmd + " (left running, as in a first terminal)'\n" + cmd + " > dev.log 2>&1 &\n")
			case i == 0 && strings.HasPrefix(line, "make test"):
			case strings.HasPrefix(line, "export "):
				s.WriteString("echo '+ " + line + "'\n" + line + "\n")
			default:
				sawInstall = sawInstall || strings.Contains(line, "install") || strings.Contains(line, "make build")
				s.WriteString("step " + shellQuote(line) + "\n")
			}
		}
	}
	if !sawInstall || !sawDev {
		t.Fatalf("the quick start must run busmesh dev and install busmesh before its verbs:\n%s", strings.Join(blocks, "\n"))
	}
	s.WriteString("echo '--- busmesh dev printed:'; cat dev.log\n")
	dir := freshClone(t)
	env, _ := goEnv(t)
	out, err := script(t, dir, s.String(), env, 5*time.Minute)
	if err != nil {
		t.Fatalf("the quick start failed: %v\n%s", err, out)
	}
	for _, want := range []string{"ready: 127.0.0.1:15000", "hello from the demo service", "dashboard of sidecar dev: http://127.0.0.1:15000/"} {
		if !strings.Contains(out, want) {
			t.Errorf("the quick start's output does not say %q:\n%s", want, out)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("quick start:\n%s", out)
	}
}

// TestReadmeTwoProcesses pastes the README's two-process walkthrough as one
// block on a fresh clone: it must end with both curl commands answered by
// the service, through the mesh.
func TestReadmeTwoProcesses(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("python3 is not installed; .ci/run installs it") // in CI a missing tool is a failure
		}
		t.Skip("python3 is not installed; the walkthrough's service is python3 -m http.server")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := readmeBlocks(t, string(readme), "## Two processes")[0]
	// The walkthrough assumes a NATS server on 127.0.0.1:4222. In the
	// script's own network namespace there is none: start one, or, as the
	// README says for a machine without one, let the callee host it.
	prelude := "set -e\n"
	natsServer, err := exec.LookPath("nats-server")
	if err != nil {
		natsServer, err = exec.LookPath("/usr/sbin/nats-server")
	}
	if err == nil {
		prelude += natsServer + " -a 127.0.0.1 -p 4222 >/dev/null 2>&1 &\n" +
			"for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.05; done\n"
	} else {
		block = strings.Replace(block, "bin/busmesh sidecar --config deploy/examples/quickstart/callee.yaml",
			"BUSMESH_BROKER=embedded://127.0.0.1:4222 bin/busmesh sidecar --config deploy/examples/quickstart/callee.yaml", 1)
	}
	dir := freshClone(t)
	env, _ := goEnv(t)
	out, err := script(t, dir, prelude+block, env, 5*time.Minute)
	if err != nil {
		t.Fatalf("the walkthrough pasted as one block failed: %v\n%s", err, out)
	}
	if n := strings.Count(out, "<h1>Directory listing for /</h1>"); n != 2 {
		t.Errorf("the service answered %d of the 2 curl commands, want both:\n%s", n, out)
	}
}

// lines returns a block's command lines: comments and blank lines dropped.
func lines(block string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader([]byte(block)))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// trailingComment is a shell comment after a command.
var trailingComment = regexp.MustCompile(`\s+#.*$`)

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
