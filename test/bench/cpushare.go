package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// cpuTimes is the machine's CPU time from the "cpu" line of /proc/stat,
// summed over its CPUs, in USER_HZ ticks.
//
// A row that leaves the CPUs idle at high concurrency is held back by its
// hops' wake-ups (or a broker's deliberate waits), not by CPU; at c=1 one
// call at a time leaves CPU idle whatever the row. Steal is time the
// vCPUs were ready to run and the hypervisor ran something else (the
// host's own work, other guests). Each cell reports both, so that a
// reader can tell a slow row from a slow machine.
type cpuTimes struct {
	total int64 // every state: user, nice, system, idle, iowait, irq, softirq, steal
	idle  int64 // idle and iowait
	steal int64
}

// readCPUTimes reads the aggregate "cpu" line of /proc/stat.
func readCPUTimes() (cpuTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseCPUTimes(b)
}

// parseCPUTimes parses the text of /proc/stat.
func parseCPUTimes(stat []byte) (cpuTimes, error) {
	for line := range bytes.Lines(stat) {
		f := bytes.Fields(line)
		if len(f) == 0 || string(f[0]) != "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice]:
		// guest time is counted in user already.
		if len(f) < 9 {
			return cpuTimes{}, fmt.Errorf("parse /proc/stat: %d fields on the cpu line, want at least 8", len(f)-1)
		}
		var v [8]int64
		for i := range v {
			n, err := strconv.ParseInt(string(f[i+1]), 10, 64)
			if err != nil {
				return cpuTimes{}, fmt.Errorf("parse /proc/stat: field %d of the cpu line: %w", i+1, err)
			}
			v[i] = n
		}
		var t cpuTimes
		for _, n := range v {
			t.total += n
		}
		t.idle, t.steal = v[3]+v[4], v[7]
		return t, nil
	}
	return cpuTimes{}, fmt.Errorf("parse /proc/stat: no cpu line")
}

// sub returns the time from b to a.
func (a cpuTimes) sub(b cpuTimes) cpuTimes {
	return cpuTimes{a.total - b.total, a.idle - b.idle, a.steal - b.steal}
}

// add returns the sum of two intervals.
func (a cpuTimes) add(b cpuTimes) cpuTimes {
	return cpuTimes{a.total + b.total, a.idle + b.idle, a.steal + b.steal}
}

// shares returns the idle and stolen parts of the interval, as fractions
// of all its CPU time; ok is false for an empty interval.
func (a cpuTimes) shares() (idle, steal float64, ok bool) {
	if a.total <= 0 {
		return 0, 0, false
	}
	return float64(a.idle) / float64(a.total), float64(a.steal) / float64(a.total), true
}
