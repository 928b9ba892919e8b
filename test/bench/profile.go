package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// profileLead is how long the profiled load runs before the profiles
// start, and after they end.
const profileLead = 500 * time.Millisecond

// profileReport is the CPU profiles of one row's sidecars under load.
type profileReport struct {
	row     string
	cfg     config
	seconds time.Duration
	load    string
	tops    []profileTop
	err     string
}

// profileTop is one process's profile and its `go tool pprof -top`.
type profileTop struct {
	role string
	file string
	top  string
}

func (p *profileReport) files() []string {
	var out []string
	for _, t := range p.tops {
		out = append(out, "`"+t.file+"`")
	}
	return out
}

// profile loads the HTTP mesh row of -profile-broker (or with
// -profile-grpc the gRPC one) at the highest concurrency and the
// smallest body, and meanwhile takes a CPU profile of its ambassador and
// adapter from their admin ports (/debug/pprof/profile). The profiles go
// next to the report, with the top functions of each.
func (e *env) profile(ctx context.Context, o *options) *profileReport {
	row := meshRowName(o.profileOn)
	if o.profileGRPC {
		row = rowMeshGRPC
	}
	p := &profileReport{row: row, cfg: config{e.maxConc, o.sizes[0]}, seconds: o.profile}
	r := e.row(p.row)
	if r == nil {
		p.err = p.row + " was not measured"
		return p
	}
	fmt.Fprintf(os.Stderr, "bench: profiling %s for %s\n", p.row, o.profile)
	dir := filepath.Dir(o.out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.err = err.Error()
		return p
	}
	loaded := make(chan loadResult, 1)
	go func() {
		lr, _ := runLoad(ctx, r.calls, p.cfg.conc, p.cfg.size, profileLead, o.profile+2*profileLead)
		loaded <- lr
	}()
	time.Sleep(profileLead)

	tops := make([]profileTop, len(r.procs))
	errs := make([]error, len(r.procs))
	var wg sync.WaitGroup
	for i, proc := range r.procs {
		if proc.admin == "" {
			continue
		}
		tops[i] = profileTop{role: proc.role, file: filepath.Join(dir, fmt.Sprintf("profile-%s-%s.pprof", p.row, proc.role))}
		wg.Go(func() { errs[i] = fetchProfile(ctx, proc.admin, o.profile, tops[i].file) })
	}
	wg.Wait()
	p.load = strings.Join(strings.Fields((<-loaded).summary()), " ")
	for i := range tops {
		if tops[i].file == "" {
			continue
		}
		if errs[i] != nil {
			tops[i].top = "no profile: " + errs[i].Error()
		} else {
			tops[i].top = pprofTop(ctx, e.binary, tops[i].file)
		}
		p.tops = append(p.tops, tops[i])
	}
	return p
}

// fetchProfile saves a CPU profile of d from the admin port at addr.
func fetchProfile(ctx context.Context, addr string, d time.Duration, file string) error {
	ctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(1, int(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch profile: %s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("save profile: %w", err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("save profile: %w", err)
	}
	return f.Close()
}

// pprofTop returns the top functions of a profile, by own CPU time and by
// cumulative time, from `go tool pprof`.
func pprofTop(ctx context.Context, binary, file string) string {
	var out strings.Builder
	for _, args := range [][]string{{"-top", "-nodecount=20"}, {"-top", "-cum", "-nodecount=25"}} {
		cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof"}, args...), binary, file)...)
		text, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Sprintf("go tool pprof: %v\n%s", err, text)
		}
		out.Write(text)
		out.WriteString("\n")
	}
	return out.String()
}
