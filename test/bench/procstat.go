package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// procSample is what /proc says about a process at one moment.
type procSample struct {
	cpu  time.Duration // user + system time since it started
	rss  int64         // resident set, bytes (VmRSS)
	anon int64         // its anonymous part, bytes (RssAnon): heap and stacks, not the binary's pages
	hwm  int64         // peak resident set, bytes (VmHWM), since start or resetPeak
}

// readProc samples /proc/<pid>/stat and /proc/<pid>/status.
func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after its closing parenthesis. utime and stime are
	// fields 14 and 15, so 12th and 13th after it.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("parse stat of %d: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("parse stat of %d: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("parse stat of %d: utime %q stime %q", pid, f[11], f[12])
	}
	s.cpu = time.Duration(utime+stime) * clockTick

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read status of %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch key {
		case "VmRSS":
			s.rss = parseKB(value)
		case "VmHWM":
			s.hwm = parseKB(value)
		case "RssAnon":
			s.anon = parseKB(value)
		}
	}
	return s, nil
}

// onCPU returns how long the process's threads have run on a CPU, in
// nanoseconds (the first field of /proc/<pid>/task/<tid>/schedstat, the
// scheduler's own account): finer than stat's 10 ms ticks, which a process
// at rest, waking for microseconds, mostly slips between. A thread that
// ended takes its time with it; a sidecar's threads last.
func onCPU(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no schedstat for %d (a kernel without CONFIG_SCHED_INFO?)", pid)
	}
	var total int64
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %s: %w", t, err)
		}
		total += n
	}
	return time.Duration(total), nil
}

// parseKB parses a /proc/<pid>/status size, "   12345 kB", into bytes.
func parseKB(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
	return n << 10
}

// resetPeak resets the process's VmHWM to its current RSS, so that a later
// reading gives the peak of what happened in between. It needs the right to
// write /proc/<pid>/clear_refs (Linux 4.0+; the process's owner or root).
func resetPeak(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS of %d: %w", pid, err)
	}
	return nil
}

// listenerPID returns the process listening on addr's TCP port on this
// machine: the socket's inode from /proc/net/tcp{,6}, then the process
// holding that socket among /proc/*/fd (the bench's own user's processes,
// or all of them as root), the highest pid when several hold it (usually
// the server a supervisor started after opening the socket). addr must
// name this machine.
func listenerPID(addr string) (int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	if !isLocal(host) {
		return 0, fmt.Errorf("%s is not on this machine", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return 0, fmt.Errorf("port %q: %w", port, err)
	}
	want := fmt.Sprintf(":%04X", n)
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			// sl local_address rem_address st ... inode (the 10th field)
			f := strings.Fields(line)
			if len(f) >= 10 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no process on this machine listens on port %d", n)
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	found := 0
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && inodes[target] {
			if pid, err := strconv.Atoi(strings.Split(fd, "/")[2]); err == nil && pid > found {
				found = pid
			}
		}
	}
	if found == 0 {
		return 0, fmt.Errorf("the process listening on port %d is not visible to this user", n)
	}
	return found, nil
}

// isLocal reports whether host is this machine: a loopback name or
// address, or an address of one of its interfaces.
func isLocal(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	if ip.IsLoopback() || ip.IsUnspecified() {
		return true
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// processName returns a process's command name (/proc/<pid>/comm).
func processName(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return strconv.Itoa(pid)
	}
	return strings.TrimSpace(string(b))
}
