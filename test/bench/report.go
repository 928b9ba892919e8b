package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// report renders a run as markdown.
type report struct {
	opts    *options
	machine *machine
	env     *env
	res     *results
	profile *profileReport
	wall    time.Duration
}

func (r *report) markdown() string {
	var b strings.Builder
	r.header(&b)
	r.legend(&b)
	r.results(&b)
	r.resources(&b)
	r.targets(&b)
	r.notes(&b)
	r.profileSection(&b)
	return b.String()
}

func (r *report) header(b *strings.Builder) {
	o, m := r.opts, r.machine
	fmt.Fprintf(b, "# busmesh side-by-side benchmark\n\n")
	fmt.Fprintf(b, "| | |\n|---|---|\n")
	fmt.Fprintf(b, "| command | `%s` |\n", strings.Join(append([]string{"go run ./test/bench"}, o.args...), " "))
	fmt.Fprintf(b, "| date | %s |\n", m.date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(b, "| machine | nproc %d, %s, %s, %s |\n", m.nproc, m.model, m.kernel, m.goVersion)
	fmt.Fprintf(b, "| load average (1, 5, 15 min) | %s at start, %s at end |\n", m.loadStart, m.loadEnd)
	fmt.Fprintf(b, "| commit | %s |\n", m.commit)
	fmt.Fprintf(b, "| run | %d round(s) × %s measured (after %s unrecorded warm-up) per row and configuration; rows interleaved, order rotated each round; rounds merged |\n",
		o.rounds, o.duration, o.warmup)
	fmt.Fprintf(b, "| configurations | concurrency %s × request body %s (POST, echoed back) |\n", joinInts(o.concurrency, fmtConc), joinInts(o.sizes, fmtSize))
	fmt.Fprintf(b, "| load generator | closed loop, a fixed number of workers, every call timed from just before sending to the end of reading the answer; net/http keep-alive client with a connection per worker; one gRPC connection |\n")
	fmt.Fprintf(b, "| brokers | %s |\n", strings.Join(r.env.brokers, "; "))
	fmt.Fprintf(b, "| wall time | %s |\n\n", r.wall.Round(time.Second))
}

func (r *report) legend(b *strings.Builder) {
	fmt.Fprintf(b, "## Rows\n\n")
	for _, row := range r.env.rows {
		fmt.Fprintf(b, "- `%s`: %s\n", row.name, row.about)
	}
	for _, s := range r.env.skipped {
		fmt.Fprintf(b, "- `%s`: **not measured**: %s\n", s.row, firstLine(s.why))
	}
	fmt.Fprintf(b, "\n")
}

func (r *report) results(b *strings.Builder) {
	fmt.Fprintf(b, "## Results\n\n")
	fmt.Fprintf(b, "± is the spread of requests/s over the rounds ((max − min) / mean). "+
		"The ratios divide this row's number by `direct-http`'s and by the raw request/reply of the same broker (`raw-<broker>`; for `mesh-grpc-nats`, `direct-grpc` is the first ratio instead). "+
		"idle and steal are shares of the machine's CPU time over the row's runs, warm-up included (/proc/stat). At c=1 one call at a time leaves much of it idle whatever the row; at the highest concurrency, idle means the row was held back by its hops' wake-ups (or a broker's deliberate waits) rather than by CPU. Steal is time the vCPUs were ready to run and the hypervisor ran something else: the host's own work or other guests.\n\n")
	for _, c := range r.opts.concurrency {
		for _, size := range r.opts.sizes {
			fmt.Fprintf(b, "### c=%d, %s\n\n", c, fmtSize(size))
			fmt.Fprintf(b, "| row | req/s | ± | p50 | p90 | p99 | max | errors | p50 / direct | req/s / direct | p50 / raw | req/s / raw | idle | steal |\n")
			fmt.Fprintf(b, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
			for _, row := range r.env.rows {
				s := r.res.get(row.name, c, size)
				if s == nil {
					continue
				}
				direct := rowDirectHTTP
				if row.name == rowMeshGRPC {
					direct = rowDirectGRPC
				}
				d := r.res.get(direct, c, size)
				var raw *cellStats
				if row.broker != "" {
					raw = r.res.get(rawRowName(row.broker), c, size)
				}
				idle, steal := "—", "—"
				if s.cpusKnown {
					idle, steal = fmtPct(s.idle), fmtPct(s.steal)
				}
				fmt.Fprintf(b, "| `%s` | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n",
					row.name, fmtRPS(s.rps), r.spread(s), fmtDur(s.p50), fmtDur(s.p90), fmtDur(s.p99), fmtDur(s.max), s.errors,
					ratio(s, d, p50Of), ratio(s, d, rpsOf), ratio(s, raw, p50Of), ratio(s, raw, rpsOf), idle, steal)
			}
			fmt.Fprintf(b, "\n")
		}
	}
}

// spread formats a cell's round-to-round spread; one round has none.
func (r *report) spread(s *cellStats) string {
	if r.opts.rounds < 2 {
		return "—"
	}
	return fmtPct(s.spread)
}

func (r *report) resources(b *strings.Builder) {
	fmt.Fprintf(b, "## Processes\n\n")
	fmt.Fprintf(b, "Resident memory (MB = 10⁶ bytes) from /proc/<pid>/status: VmRSS before any load (in parentheses its anonymous part, RssAnon: heap and stacks rather than the binary's mapped pages); the peak (VmHWM, reset through clear_refs before each run) and VmRSS after the runs at c=%d. "+
		"CPU idle is the time on a CPU, in ms per second, over %s of rest after the idle memory reading, before any load (from /proc/<pid>/task/*/schedstat). "+
		"CPU is utime + stime from /proc/<pid>/stat over each run, warm-up included, per 10,000 calls made (10 ms resolution). "+
		"A broker row is the broker's server process on this machine (nats-server, RabbitMQ's beam.smp, the kfake child), which every call through it also costs; its CPU includes the idle chatter of the other rows' sidecars.\n\n", r.env.maxConc, idleCPUWindow)
	fmt.Fprintf(b, "| row | process | RSS idle | CPU idle | RSS peak c=%d | RSS end c=%d |", r.env.maxConc, r.env.maxConc)
	align := "|---|---|--:|--:|--:|--:|"
	for _, c := range r.opts.concurrency {
		for _, size := range r.opts.sizes {
			fmt.Fprintf(b, " CPU s/10k c=%d %s |", c, fmtSize(size))
			align += "--:|"
		}
	}
	fmt.Fprintf(b, "\n%s\n", align)
	for _, row := range r.env.rows {
		for _, p := range row.procs {
			m := r.res.mem[memKey{row.name, p.role}]
			if m == nil {
				m = &mem{}
			}
			peak := fmtMB(float64(m.peak))
			if m.peakNote != "" {
				peak += " †"
			}
			idleCPU := "—"
			if m.idleCPUKnown {
				idleCPU = fmt.Sprintf("%.1f ms/s", m.idleCPU*1000)
			}
			fmt.Fprintf(b, "| `%s` | %s | %s (%s) | %s | %s | %s |", row.name, p.role, fmtMB(float64(m.idle)), fmtMB(float64(m.idleAnon)), idleCPU, peak, fmtMB(float64(m.end)))
			for _, c := range r.opts.concurrency {
				for _, size := range r.opts.sizes {
					cell := "—"
					if s := r.res.get(row.name, c, size); s != nil {
						if d, ok := s.cpuPer10k[p.role]; ok {
							cell = fmt.Sprintf("%.2f", d.Seconds())
						}
					}
					fmt.Fprintf(b, " %s |", cell)
				}
			}
			fmt.Fprintf(b, "\n")
		}
	}
	fmt.Fprintf(b, "\n")
}

func (r *report) targets(b *strings.Builder) {
	fmt.Fprintf(b, "## Targets\n\n")
	fmt.Fprintf(b, "| target | measured | limit | verdict | by |\n|---|--:|---|---|---|\n")
	met, missed := 0, 0
	for _, v := range evaluate(r.env, r.res, r.opts.sizes) {
		status := v.status
		switch v.status {
		case "met":
			met++
		case "missed":
			missed++
			status = "**missed**"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", v.target, v.measured, v.limit, status, v.margin)
	}
	fmt.Fprintf(b, "\n%d met, %d missed.\n\n", met, missed)
}

func (r *report) notes(b *strings.Builder) {
	fmt.Fprintf(b, "## Notes\n\n")
	for _, row := range r.env.rows {
		for _, c := range r.opts.concurrency {
			for _, size := range r.opts.sizes {
				if cell := r.res.cells[cellKey{row.name, config{c, size}}]; cell != nil && cell.firstErr != "" {
					fmt.Fprintf(b, "- `%s` c=%d %s: %d failed calls; the first: %s\n", row.name, c, fmtSize(size), cell.errors, firstLine(cell.firstErr))
				}
			}
		}
	}
	for _, row := range r.env.rows {
		for _, p := range row.procs {
			if m := r.res.mem[memKey{row.name, p.role}]; m != nil && m.peakNote != "" {
				fmt.Fprintf(b, "- † `%s` %s: %s\n", row.name, p.role, m.peakNote)
			}
		}
	}
	for _, s := range r.env.skipped {
		fmt.Fprintf(b, "- `%s` not measured: %s\n", s.row, indentBlock(s.why))
	}
	for _, n := range r.env.notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	fmt.Fprintf(b, "- Every process in the data path runs on this machine's %d cores at once, the load generator included; the rows differ in how many processes share them.\n", r.machine.nproc)
	fmt.Fprintf(b, "- Sidecars log at warn, with discovery at its default interval; the echo application, the responders, the proxies and kfake are this program re-executed (`-child ROLE`).\n")
	fmt.Fprintf(b, "- The echo application answers 16 KiB without Content-Length (Go's server streams it chunked), 128 B with it, as a plain net/http handler does.\n")
	fmt.Fprintf(b, "- Each proxy enables full duplex on its inbound request: without it Go's HTTP/1 server closes the request body when the response starts and the ReverseProxy transport can tear down its upstream connection mid-answer (golang/go#40747), truncating about one 16 KiB answer in a thousand.\n\n")
}

func (r *report) profileSection(b *strings.Builder) {
	p := r.profile
	if p == nil {
		return
	}
	fmt.Fprintf(b, "## Profile\n\n")
	if p.err != "" {
		fmt.Fprintf(b, "Not taken: %s\n", p.err)
		return
	}
	fmt.Fprintf(b, "CPU profiles of the `%s` sidecars over %s at c=%d, %s, taken after the rounds (load during the profile: %s). Files: %s.\n\n",
		p.row, p.seconds, p.cfg.conc, fmtSize(p.cfg.size), p.load, strings.Join(p.files(), ", "))
	for _, t := range p.tops {
		fmt.Fprintf(b, "### %s\n\n```\n%s\n```\n\n", t.role, strings.TrimSpace(t.top))
	}
}

// writeReport writes text to path, making its directory.
func writeReport(path, text string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func p50Of(s *cellStats) float64 { return float64(s.p50) }
func rpsOf(s *cellStats) float64 { return s.rps }

// ratio formats num's value over den's, or — when there is no den.
func ratio(num, den *cellStats, value func(*cellStats) float64) string {
	if num == nil || den == nil || value(den) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", value(num)/value(den))
}

// fmtDur formats a latency with three significant digits.
func fmtDur(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	switch {
	case us < 10:
		return fmt.Sprintf("%.2f µs", us)
	case us < 100:
		return fmt.Sprintf("%.1f µs", us)
	case us < 1000:
		return fmt.Sprintf("%.0f µs", us)
	case us < 10000:
		return fmt.Sprintf("%.2f ms", us/1000)
	case us < 100000:
		return fmt.Sprintf("%.1f ms", us/1000)
	case us < 1e6:
		return fmt.Sprintf("%.0f ms", us/1000)
	}
	return fmt.Sprintf("%.2f s", us/1e6)
}

func fmtRPS(v float64) string { return fmt.Sprintf("%.0f", v) }
func fmtPct(v float64) string { return fmt.Sprintf("%.0f %%", 100*v) }
func fmtMB(v float64) string  { return fmt.Sprintf("%.1f MB", v/1e6) }
func fmtConc(c int) string    { return fmt.Sprintf("%d", c) }

// fmtSize formats a body size: 128 B, 16 KiB.
func fmtSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func joinInts(v []int, f func(int) string) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = f(n)
	}
	return strings.Join(s, ", ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// indentBlock keeps a multi-line message inside its list item.
func indentBlock(s string) string {
	s = strings.TrimRight(s, "\n")
	if !strings.Contains(s, "\n") {
		return s
	}
	return "\n\n  ```\n  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n  ```"
}
