// Command hops reads the scheduler events of a run at concurrency 1 and
// says, for each process of a call's chain, how long it waits for a CPU
// once woken, how long its turn takes (from its switch onto a CPU to its
// wake-up of the next process), and how long it stays on a CPU after that
// wake-up (its wind-down, which competes with the next hop).
//
//	perf record -o sched.data -e sched:sched_switch -e sched:sched_wakeup -a -- sleep 1
//	perf script -i sched.data -F comm,pid,tid,cpu,time,event,trace | go run ./test/bench/hops amb=PID adapter=PID ...
//
// Only wake-ups between the named processes count.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	names, err := parseNames(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "hops:", err)
		fmt.Fprintln(os.Stderr, "usage: perf script -F comm,pid,tid,cpu,time,event,trace | hops NAME=PID...")
		os.Exit(2)
	}
	s, err := analyse(os.Stdin, names)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hops:", err)
		os.Exit(1)
	}
	s.print(os.Stdout)
}

// parseNames reads NAME=PID arguments into names by PID.
func parseNames(args []string) (map[int]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("no process named")
	}
	names := make(map[int]string, len(args))
	for _, a := range args {
		name, pid, ok := strings.Cut(a, "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil {
			return nil, fmt.Errorf("%q: want NAME=PID", a)
		}
		names[n] = name
	}
	return names, nil
}

// event is one line of perf script.
type event struct {
	t        float64 // seconds
	pid, tid int
	kind     string // sched:sched_switch or sched:sched_wakeup
	trace    string
}

var (
	lineRE  = regexp.MustCompile(`^\s*\S.*?\s+(\d+)/(\d+)\s+\[\d+\]\s+([\d.]+):\s+(\S+):\s+(.*)$`)
	fieldRE = regexp.MustCompile(`(\w+)=(\S+)`)
)

// fields returns the key=value pairs of a trace.
func fields(trace string) map[string]string {
	m := map[string]string{}
	for _, f := range fieldRE.FindAllStringSubmatch(trace, -1) {
		m[f[1]] = f[2]
	}
	return m
}

// stats holds the samples, in µs, by the names they are reported under.
type stats struct {
	wait, turn, winddown map[string][]float64
}

// analyse reads perf script's lines from r.
func analyse(r io.Reader, names map[int]string) (*stats, error) {
	var evs []event
	tgid := map[int]int{} // thread -> process, as threads show up running
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		tid, _ := strconv.Atoi(m[2])
		t, _ := strconv.ParseFloat(m[3], 64)
		tgid[tid] = pid
		evs = append(evs, event{t, pid, tid, m[4], m[5]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	s := &stats{wait: map[string][]float64{}, turn: map[string][]float64{}, winddown: map[string][]float64{}}
	type woken struct {
		at   float64
		from int
	}
	wokenAt := map[int]woken{}         // thread -> its pending wake-up by another named process
	turnFrom := map[int]woken{}        // process -> when its turn began, and who woke it
	windFrom := map[int]float64{}      // process -> when it woke the next one
	onCPU := map[int]map[int]float64{} // process -> its threads on a CPU, since when
	windCPU := map[int]float64{}       // process -> time on a CPU since windFrom
	for _, e := range evs {
		f := fields(e.trace)
		switch e.kind {
		case "sched:sched_wakeup":
			wt, _ := strconv.Atoi(f["pid"])
			wp, known := tgid[wt]
			if !known || wp == e.pid || names[wp] == "" || names[e.pid] == "" {
				continue
			}
			wokenAt[wt] = woken{e.t, e.pid}
			if tb, ok := turnFrom[e.pid]; ok {
				delete(turnFrom, e.pid)
				key := names[tb.from] + " > " + names[e.pid] + " > " + names[wp]
				s.turn[key] = append(s.turn[key], (e.t-tb.at)*1e6)
			}
			if _, ok := windFrom[e.pid]; !ok {
				windFrom[e.pid], windCPU[e.pid] = e.t, 0
			}
		case "sched:sched_switch":
			prev, _ := strconv.Atoi(f["prev_pid"])
			next, _ := strconv.Atoi(f["next_pid"])
			if pp, ok := tgid[prev]; ok && onCPU[pp] != nil {
				if since, ok := onCPU[pp][prev]; ok {
					if w, ok := windFrom[pp]; ok {
						windCPU[pp] += e.t - max(since, w)
					}
					delete(onCPU[pp], prev)
				}
				if _, ok := windFrom[pp]; ok && len(onCPU[pp]) == 0 && f["prev_state"] != "R" {
					s.winddown[names[pp]] = append(s.winddown[names[pp]], windCPU[pp]*1e6)
					delete(windFrom, pp)
				}
			}
			np, ok := tgid[next]
			if !ok {
				continue
			}
			if onCPU[np] == nil {
				onCPU[np] = map[int]float64{}
			}
			onCPU[np][next] = e.t
			if w, ok := wokenAt[next]; ok {
				delete(wokenAt, next)
				key := names[w.from] + " > " + names[np]
				s.wait[key] = append(s.wait[key], (e.t-w.at)*1e6)
				turnFrom[np] = woken{e.t, w.from} // the turn starts on the CPU
			}
		}
	}
	return s, nil
}

// minSamples hides pairs seen too rarely to be a call's path.
const minSamples = 50

// print writes each table, most frequent pairs first, with medians.
func (s *stats) print(w io.Writer) {
	table := func(title string, m map[string][]float64) {
		fmt.Fprintf(w, "%s\n", title)
		keys := make([]string, 0, len(m))
		for k, v := range m {
			if len(v) >= minSamples {
				keys = append(keys, k)
			}
		}
		slices.SortFunc(keys, func(a, b string) int { return len(m[b]) - len(m[a]) })
		for _, k := range keys {
			fmt.Fprintf(w, "  %-36s %6d  median %7.1f µs\n", k, len(m[k]), median(m[k]))
		}
	}
	table("wait for a CPU after a wake-up (waker > wakee):", s.wait)
	table("turn, switch-in to waking the next (woken by > process > wakes):", s.turn)
	table("wind-down on a CPU after waking the next:", s.winddown)
}

// median returns the middle of v (sorted in place).
func median(v []float64) float64 {
	slices.Sort(v)
	return v[len(v)/2]
}
