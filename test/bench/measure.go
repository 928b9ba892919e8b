package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
)

// primeDuration is the unrecorded load every row gets once before the
// first round: connections are opened and pools filled at the highest
// concurrency, so round 1 is not the only one that pays for them.
const primeDuration = 300 * time.Millisecond

// idleSettle is how long the processes rest between set-up and the idle
// memory reading.
const idleSettle = 500 * time.Millisecond

// idleCPUWindow is how long the processes' CPU use at rest is measured
// for, after idleSettle: what a sidecar costs with no call to carry (its
// discovery, health checks, and the Go runtime's own wake-ups).
const idleCPUWindow = 3 * time.Second

// recordIdle reads every row process's resident set before any load, then
// its CPU use at rest.
func (e *env) recordIdle(res *results) {
	time.Sleep(idleSettle)
	type start struct {
		m   *mem
		pid int
		cpu time.Duration
	}
	var starts []start
	for _, r := range e.rows {
		for _, p := range r.procs {
			m := res.memOf(r.name, p.role)
			if s, err := readProc(p.pid); err == nil {
				m.idle, m.idleAnon = s.rss, s.anon
			}
			if cpu, err := onCPU(p.pid); err == nil {
				starts = append(starts, start{m, p.pid, cpu})
			}
		}
	}
	began := time.Now()
	time.Sleep(idleCPUWindow)
	window := time.Since(began)
	for _, s := range starts {
		if cpu, err := onCPU(s.pid); err == nil {
			s.m.idleCPU = float64(cpu-s.cpu) / float64(window)
			s.m.idleCPUKnown = true
		}
	}
}

// measure runs the rounds. In each round every configuration is run on
// every row, one row after another, the rows' order rotated from round to
// round, so that whatever else the machine does falls on all rows alike.
func measure(ctx context.Context, o *options, e *env, res *results) error {
	for _, r := range e.rows {
		if _, err := runLoad(ctx, r.calls, e.maxConc, o.sizes[0], 0, primeDuration); err != nil {
			return err
		}
	}
	var configs []config
	for _, c := range o.concurrency {
		for _, s := range o.sizes {
			configs = append(configs, config{c, s})
		}
	}
	n := len(e.rows)
	for round := range o.rounds {
		start := time.Now()
		for _, cfg := range configs {
			for i := range n {
				r := e.rows[(i+round)%n]
				if err := e.measureOne(ctx, o, res, r, cfg); err != nil {
					return err
				}
			}
		}
		fmt.Fprintf(os.Stderr, "bench: round %d/%d done in %s\n", round+1, o.rounds, time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}

// measureOne runs one row at one configuration and records the latencies,
// the CPU time of the row's processes, and, at the highest concurrency,
// their peak and final resident sets.
func (e *env) measureOne(ctx context.Context, o *options, res *results, r *row, cfg config) error {
	atMax := cfg.conc == e.maxConc
	before := make([]procSample, len(r.procs))
	for i, p := range r.procs {
		if atMax {
			if err := resetPeak(p.pid); err != nil {
				res.memOf(r.name, p.role).peakNote = "peak since start: " + err.Error()
			}
		}
		before[i], _ = readProc(p.pid)
	}
	cpusBefore, cpusErr := readCPUTimes()
	lr, err := runLoad(ctx, r.calls, cfg.conc, cfg.size, o.warmup, o.duration)
	if err != nil {
		return fmt.Errorf("%s c=%d %d B: %w", r.name, cfg.conc, cfg.size, err)
	}
	var cpus *cpuTimes // nil: /proc/stat could not be read
	if after, err := readCPUTimes(); err == nil && cpusErr == nil {
		d := after.sub(cpusBefore)
		cpus = &d
	}
	cpu := map[string]time.Duration{}
	for i, p := range r.procs {
		after, err := readProc(p.pid)
		if err != nil {
			continue // it exited; the errors column shows the consequences
		}
		cpu[p.role] = after.cpu - before[i].cpu
		if atMax {
			m := res.memOf(r.name, p.role)
			m.peak = max(m.peak, after.hwm)
			m.end = after.rss
		}
	}
	res.add(cellKey{r.name, cfg}, lr, cpu, cpus)
	if o.verbose {
		s := lr.summary()
		fmt.Fprintf(os.Stderr, "bench:   %-20s c=%-3d %6d B  %s\n", r.name, cfg.conc, cfg.size, s)
	}
	return nil
}

// summary is a one-line account of a run for progress output.
func (r loadResult) summary() string {
	rps := 0.0
	if r.elapsed > 0 {
		rps = float64(len(r.lat)) / r.elapsed.Seconds()
	}
	s := fmt.Sprintf("%8.0f req/s", rps)
	if len(r.lat) > 0 {
		lat := slices.Clone(r.lat)
		slices.Sort(lat)
		s += fmt.Sprintf("  p50 %s", fmtDur(quantile(lat, 0.5)))
	}
	if r.errors > 0 {
		s += fmt.Sprintf("  %d errors (%v)", r.errors, r.firstErr)
	}
	return s
}
