package main

import (
	"math"
	"slices"
	"time"
)

// config is one measured configuration of a row.
type config struct {
	conc int // concurrent callers
	size int // request body bytes
}

// cellKey names the measurements of one row at one configuration.
type cellKey struct {
	row string
	config
}

// cell merges the rounds of one row at one configuration.
type cell struct {
	lat      []time.Duration
	errors   int64
	total    int64         // calls, warm-up and failures included, for CPU per call
	elapsed  time.Duration // measured time, summed over rounds
	roundRPS []float64
	firstErr string
	cpu      map[string]time.Duration // CPU time by process role, summed over rounds
	cpus     cpuTimes                 // the machine's CPU time over the runs, warm-up included
	cpusLost bool                     // a round's could not be read: cpus is partial

	stats *cellStats // computed once all rounds are in
}

// cellStats are a cell's merged numbers.
type cellStats struct {
	n                  int
	rps                float64
	spread             float64 // (max-min)/mean of the rounds' requests/s
	p50, p90, p99, max time.Duration
	errors             int64
	cpuPer10k          map[string]time.Duration
	// idle and steal are the shares of the machine's CPU time that sat
	// idle and that the vCPUs were ready to run but not run during the
	// runs (cpusKnown: /proc/stat was read for every round).
	idle, steal float64
	cpusKnown   bool
}

// memKey names one process of one row.
type memKey struct{ row, role string }

// mem is what a process's resident set did over the run, and its CPU use
// at rest.
type mem struct {
	idle     int64 // before any load
	idleAnon int64 // its anonymous part
	// idleCPU is the share of one CPU it used at rest, before any load
	// (idleCPUKnown: measured).
	idleCPU      float64
	idleCPUKnown bool
	peak         int64 // highest VmHWM seen under the highest concurrency
	end          int64 // VmRSS at the end of the last run at the highest concurrency
	peakNote     string
}

// results holds every measurement of a run.
type results struct {
	cells map[cellKey]*cell
	mem   map[memKey]*mem
}

func newResults() *results {
	return &results{cells: map[cellKey]*cell{}, mem: map[memKey]*mem{}}
}

// add merges one round's run: its calls, its processes' CPU time and the
// machine's (cpus, nil when it could not be read).
func (rs *results) add(k cellKey, r loadResult, cpu map[string]time.Duration, cpus *cpuTimes) {
	c := rs.cells[k]
	if c == nil {
		c = &cell{cpu: map[string]time.Duration{}}
		rs.cells[k] = c
	}
	c.lat = append(c.lat, r.lat...)
	c.errors += r.errors
	c.total += r.total
	c.elapsed += r.elapsed
	if r.elapsed > 0 {
		c.roundRPS = append(c.roundRPS, float64(len(r.lat))/r.elapsed.Seconds())
	}
	if c.firstErr == "" && r.firstErr != nil {
		c.firstErr = r.firstErr.Error()
	}
	for role, d := range cpu {
		c.cpu[role] += d
	}
	if cpus != nil {
		c.cpus = c.cpus.add(*cpus)
	} else {
		c.cpusLost = true
	}
	c.stats = nil
}

// memOf returns the memory record of a process, made on first use.
func (rs *results) memOf(row, role string) *mem {
	k := memKey{row, role}
	m := rs.mem[k]
	if m == nil {
		m = &mem{}
		rs.mem[k] = m
	}
	return m
}

// get returns the stats of a row at a configuration, or nil if it was not
// measured.
func (rs *results) get(row string, conc, size int) *cellStats {
	c := rs.cells[cellKey{row, config{conc, size}}]
	if c == nil {
		return nil
	}
	if c.stats == nil {
		c.stats = c.compute()
	}
	return c.stats
}

func (c *cell) compute() *cellStats {
	s := &cellStats{n: len(c.lat), errors: c.errors, cpuPer10k: map[string]time.Duration{}}
	if c.elapsed > 0 {
		s.rps = float64(len(c.lat)) / c.elapsed.Seconds()
	}
	if len(c.roundRPS) > 1 && s.rps > 0 {
		s.spread = (slices.Max(c.roundRPS) - slices.Min(c.roundRPS)) / s.rps
	}
	if len(c.lat) > 0 {
		slices.Sort(c.lat)
		s.p50, s.p90, s.p99 = quantile(c.lat, 0.50), quantile(c.lat, 0.90), quantile(c.lat, 0.99)
		s.max = c.lat[len(c.lat)-1]
	}
	s.idle, s.steal, s.cpusKnown = c.cpus.shares()
	s.cpusKnown = s.cpusKnown && !c.cpusLost
	if c.total > 0 {
		for role, d := range c.cpu {
			s.cpuPer10k[role] = time.Duration(float64(d) * 10000 / float64(c.total))
		}
	}
	return s
}

// quantile returns the q-quantile of sorted, the smallest value with at
// least q of the samples at or below it.
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(float64(len(sorted))*q)) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
