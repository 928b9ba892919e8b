package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process gets to exit after SIGTERM before it is
// killed.
const stopGrace = 10 * time.Second

// supervisor owns the processes of a run and a temporary directory for
// their configs, logs and the busmesh binary. close stops every process it
// started and removes the directory. Each child also gets SIGKILL from the
// kernel if this process dies first (Pdeathsig), so even a killed run
// leaves nothing behind.
type supervisor struct {
	dir  string // temporary directory
	self string // this binary, re-executed for the child roles

	mu    sync.Mutex
	procs []*process
}

// process is one started process.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string // file with its stdout and stderr

	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

func newSupervisor() (*supervisor, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	dir, err := os.MkdirTemp("", "busmesh-bench-")
	if err != nil {
		return nil, fmt.Errorf("make temp dir: %w", err)
	}
	return &supervisor{dir: dir, self: self}, nil
}

// path returns name inside the run's temporary directory.
func (s *supervisor) path(name string) string { return filepath.Join(s.dir, name) }

// start starts a process whose stdout and stderr go to a log file, and
// returns once it is running.
func (s *supervisor) start(name, bin string, args ...string) (*process, error) {
	p, _, err := s.spawn(name, false, bin, args...)
	return p, err
}

// startChild starts this binary in one of its child roles and waits, at
// most timeout, for the child to print its ready line on stdout. It returns
// what followed "ready" on that line (an address, a version).
func (s *supervisor) startChild(ctx context.Context, name string, timeout time.Duration, role string, args ...string) (*process, string, error) {
	p, stdout, err := s.spawn(name, true, s.self, append([]string{childFlag, role}, args...)...)
	if err != nil {
		return nil, "", err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout) // nothing more is expected; never block the child
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case line, ok := <-lines:
		if rest, found := strings.CutPrefix(line, readyLine); ok && found {
			return p, strings.TrimSpace(rest), nil
		}
		<-p.done
		return nil, "", fmt.Errorf("%s exited at start (%v):\n%s", name, p.err, p.tail())
	case <-timer.C:
		return nil, "", fmt.Errorf("%s not ready after %v:\n%s", name, timeout, p.tail())
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

func (s *supervisor) spawn(name string, pipe bool, bin string, args ...string) (*process, io.ReadCloser, error) {
	logPath := s.path(name + ".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout io.ReadCloser
	if pipe {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, nil, fmt.Errorf("start %s: %w", name, err)
		}
	} else {
		cmd.Stdout = logFile
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	// Registered before Start, under the lock close takes: a Ctrl-C during
	// start-up still finds it.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.procs = append(s.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, stdout, nil
}

// pid returns the process id.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process's log.
func (p *process) tail() string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	const keep = 3000
	if len(data) > keep {
		data = data[len(data)-keep:]
	}
	return strings.TrimRight(string(data), "\n")
}

// stop sends SIGTERM and waits for the process to exit, killing it after
// stopGrace. It returns an error if the process did not end cleanly on
// SIGTERM; one that had already exited was dealt with when it did (a row
// that failed to start is skipped, one that died under load shows errors).
func (p *process) stop() error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.name, stopGrace)
	}
	if p.err != nil {
		return fmt.Errorf("%s, on SIGTERM: %w", p.name, p.err)
	}
	return nil
}

// close stops every process, newest first, so that what others depend on
// (the application, the kfake cluster) goes last, and removes the
// temporary directory. Unclean exits are reported with the end of the
// process's log, unless the run was interrupted: a Ctrl-C reaches the
// children too, and some then exit with an error.
func (s *supervisor) close(interrupted bool) error {
	s.mu.Lock()
	procs := s.procs
	s.procs = nil
	s.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(); err != nil && !interrupted {
			errs = append(errs, fmt.Errorf("%w\n%s", err, procs[i].tail()))
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", s.dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping processes: %w", err)
	}
	return nil
}
