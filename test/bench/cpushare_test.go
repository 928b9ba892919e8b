package main

import (
	"math"
	"strings"
	"testing"
)

func TestParseCPUTimes(t *testing.T) {
	stat := "cpu  100 5 40 800 20 3 2 30 7 0\ncpu0 50 2 20 400 10 1 1 15 0 0\nintr 1\n"
	got, err := parseCPUTimes([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	want := cpuTimes{total: 100 + 5 + 40 + 800 + 20 + 3 + 2 + 30, idle: 820, steal: 30}
	if got != want {
		t.Fatalf("parseCPUTimes = %+v, want %+v (guest time is in user already)", got, want)
	}
	later := cpuTimes{total: want.total + 200, idle: want.idle + 50, steal: want.steal + 20}
	idle, steal, ok := later.sub(got).shares()
	if !ok || math.Abs(idle-0.25) > 1e-9 || math.Abs(steal-0.10) > 1e-9 {
		t.Fatalf("shares = %v %v %v, want 0.25 0.10 true", idle, steal, ok)
	}
	if _, _, ok := (cpuTimes{}).shares(); ok {
		t.Fatal("an empty interval has shares")
	}
}

func TestParseCPUTimesRejects(t *testing.T) {
	for _, stat := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 2 3 x 5 6 7 8\n"} {
		if _, err := parseCPUTimes([]byte(stat)); err == nil || !strings.Contains(err.Error(), "/proc/stat") {
			t.Errorf("parseCPUTimes(%q) = %v, want an error naming /proc/stat", stat, err)
		}
	}
}

func TestCellCPUShares(t *testing.T) {
	rs := newResults()
	round := cpuTimes{total: 200, idle: 50, steal: 20}
	all := cellKey{"all", config{32, 128}}
	rs.add(all, loadResult{}, nil, &round)
	rs.add(all, loadResult{}, nil, &cpuTimes{total: 200, idle: 150, steal: 0})
	s := rs.get("all", 32, 128)
	if !s.cpusKnown || math.Abs(s.idle-0.5) > 1e-9 || math.Abs(s.steal-0.05) > 1e-9 {
		t.Fatalf("two rounds: idle %v steal %v known %v, want 0.5 0.05 true (ticks summed over rounds)", s.idle, s.steal, s.cpusKnown)
	}
	partial := cellKey{"partial", config{32, 128}}
	rs.add(partial, loadResult{}, nil, &round)
	rs.add(partial, loadResult{}, nil, nil)
	if s := rs.get("partial", 32, 128); s.cpusKnown {
		t.Fatalf("a round without /proc/stat still gives shares: idle %v steal %v", s.idle, s.steal)
	}
}
