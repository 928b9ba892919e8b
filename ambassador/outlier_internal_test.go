package ambassador

import (
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

func TestOutlierEjection(t *testing.T) {
	m := telemetry.NewMetrics()
	b := newBalancer(broker.NewSubjects(""), nil, m.Resilience)
	healthy := instances([3]string{"a", "", ""}, [3]string{"b", "", ""}, [3]string{"c", "", ""})
	o := config.NewOutlier()
	o.BaseEjection = config.Duration(200 * time.Millisecond)
	rt := &Route{Service: "svc", Policy: config.ServicePolicy{LB: config.LBDirect, Outlier: o}}
	pickAll := func(n int) map[string]int {
		counts := map[string]int{}
		for range n {
			st := b.pick("svc", healthy, rt.Policy, nil)
			counts[st.instance]++
			st.start()
			pickResult{stats: st, route: rt}.done(doneInfo{latency: time.Millisecond, sample: true})
		}
		return counts
	}
	for i := range healthy { // every instance known and measured
		b.statsFor("svc", healthy, i).observe(time.Millisecond)
	}
	pickAll(10)
	stats := func(name string) *instanceStats {
		b.mu.Lock()
		defer b.mu.Unlock()
		for k, st := range b.stats {
			if k.instance == name {
				return st
			}
		}
		t.Fatalf("no stats for %s", name)
		return nil
	}
	fail := func(st *instanceStats, n int) {
		for range n {
			st.start()
			pickResult{stats: st, route: rt}.done(doneInfo{reason: reason.None, failed: true})
		}
	}
	a, c := stats("a"), stats("c")
	fail(a, o.Consecutive-1)
	if a.ej.until.Load() != 0 {
		t.Fatal("ejected before consecutive failures")
	}
	fail(a, 1)
	if a.ej.until.Load() == 0 {
		t.Fatal("not ejected after consecutive failures")
	}
	if got := pickAll(100)["a"]; got != 0 {
		t.Errorf("ejected instance picked %d times", got)
	}
	// The cap: one of three may be out (10 %, at least one).
	fail(c, o.Consecutive)
	if c.ej.until.Load() != 0 {
		t.Error("a second instance of three ejected: over max_ejected_percent")
	}
	time.Sleep(250 * time.Millisecond)
	if got := pickAll(200)["a"]; got == 0 {
		t.Error("instance not back after its ejection time")
	}
	// Ejected again: for twice the base time.
	fail(a, o.Consecutive)
	if d := time.Duration(a.ej.until.Load() - time.Now().UnixNano()); d < 300*time.Millisecond {
		t.Errorf("second ejection for %v, want 2 × 200ms", d)
	}
}

func TestInstanceBreakerSkipsInstance(t *testing.T) {
	b := newBalancer(broker.NewSubjects(""), nil, nil)
	healthy := instances([3]string{"a", "", ""}, [3]string{"b", "", ""})
	ib := config.NewInstanceBreaker()
	rt := &Route{Service: "svc", Policy: config.ServicePolicy{LB: config.LBDirect, InstanceBreaker: ib}}
	var a *instanceStats
	for a == nil {
		if st := b.pick("svc", healthy, rt.Policy, nil); st.instance == "a" {
			a = st
		}
	}
	for range ib.ConsecutiveFailures {
		a.start()
		pickResult{stats: a, route: rt}.done(doneInfo{failed: true})
	}
	for range 50 {
		if st := b.pick("svc", healthy, rt.Policy, nil); st == a {
			t.Fatal("instance with an open circuit picked")
		}
	}
	// With every circuit open, the picks go on as if none were.
	if st := b.pick("svc", healthy[:1], rt.Policy, nil); st != a {
		t.Fatalf("the only instance, its circuit open: picked %v, want it picked anyway", st)
	}
}

// TestCancelledCallTellsNothing: a call its caller abandoned (perhaps
// before its request went out) neither ends an instance's failure streak
// nor uses up the probe its half-open breaker let through.
func TestCancelledCallTellsNothing(t *testing.T) {
	b := newBalancer(broker.NewSubjects(""), nil, nil)
	healthy := instances([3]string{"a", "", ""}, [3]string{"b", "", ""})
	ib := config.NewInstanceBreaker()
	ib.OpenFor = config.Duration(20 * time.Millisecond)
	o := config.NewOutlier()
	rt := &Route{Service: "svc", Policy: config.ServicePolicy{LB: config.LBDirect, InstanceBreaker: ib, Outlier: o}}
	var a *instanceStats
	for a == nil {
		if st := b.pick("svc", healthy, rt.Policy, nil); st.instance == "a" {
			a = st
		}
	}
	for range o.Consecutive - 1 {
		a.start()
		pickResult{stats: a, route: rt}.done(doneInfo{failed: true})
	}
	a.start()
	pickResult{stats: a, route: rt}.done(doneInfo{reason: reason.Cancelled})
	if n := a.ej.consecutive.Load(); n != int32(o.Consecutive-1) {
		t.Errorf("failure streak after a cancelled call: %d, want %d (unchanged)", n, o.Consecutive-1)
	}
	// Open a's circuit, wait for half-open, and cancel the probe.
	rt = &Route{Service: "svc", Policy: config.ServicePolicy{LB: config.LBDirect, InstanceBreaker: ib}}
	for range ib.ConsecutiveFailures {
		a.start()
		pickResult{stats: a, route: rt}.done(doneInfo{failed: true})
	}
	time.Sleep(30 * time.Millisecond)
	pickA := func() (bool, bool) {
		for range 1000 {
			if st, probe := b.pickAdmitted("svc", healthy, rt.Policy, nil); st == a {
				return true, probe
			}
		}
		return false, false
	}
	picked, probe := pickA()
	if !picked || !probe {
		t.Fatalf("half-open instance a: picked %v, as a probe %v; want a probe", picked, probe)
	}
	pickResult{stats: a, route: rt, probe: true}.done(doneInfo{reason: reason.Cancelled})
	if picked, _ := pickA(); !picked {
		t.Errorf("after its half-open probe was cancelled, instance a is never picked again (state %d, probes %d)",
			a.brk.state.Load(), a.brk.probes.Load())
	}
}
