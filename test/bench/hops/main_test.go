package main

import (
	"strings"
	"testing"
)

// A hand-made trace: a wakes b, b wakes a back; b is preempted once
// during its wind-down.
const trace = `
 swapper     0/0     [000]     1.000000:     sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=a next_pid=1 next_prio=120
       a     1/1     [000]     1.000010:     sched:sched_wakeup: comm=b pid=2 prio=120 target_cpu=001
 swapper     0/0     [001]     1.000015:     sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=b next_pid=2 next_prio=120
       a     1/1     [000]     1.000030:     sched:sched_switch: prev_comm=a prev_pid=1 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
       b     2/2     [001]     1.000050:     sched:sched_wakeup: comm=a pid=1 prio=120 target_cpu=000
 swapper     0/0     [000]     1.000052:     sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=a next_pid=1 next_prio=120
       b     2/2     [001]     1.000060:     sched:sched_switch: prev_comm=b prev_pid=2 prev_prio=120 prev_state=R ==> next_comm=swapper/1 next_pid=0 next_prio=120
 swapper     0/0     [001]     1.000070:     sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=b next_pid=2 next_prio=120
       b     2/2     [001]     1.000075:     sched:sched_switch: prev_comm=b prev_pid=2 prev_prio=120 prev_state=S ==> next_comm=swapper/1 next_pid=0 next_prio=120
`

func TestAnalyse(t *testing.T) {
	s, err := analyse(strings.NewReader(trace), map[int]string{1: "a", 2: "b"})
	if err != nil {
		t.Fatal(err)
	}
	near := func(what string, got []float64, want float64) {
		t.Helper()
		if len(got) != 1 || got[0] < want-0.01 || got[0] > want+0.01 {
			t.Errorf("%s: %v µs, want [%v]", what, got, want)
		}
	}
	near("wait a > b", s.wait["a > b"], 5)
	near("wait b > a", s.wait["b > a"], 2)
	near("turn a > b > a", s.turn["a > b > a"], 35)
	near("wind-down of a", s.winddown["a"], 20)
	near("wind-down of b (preempted for 10 µs)", s.winddown["b"], 15)
}

func TestParseNames(t *testing.T) {
	if _, err := parseNames([]string{"amb=12", "adapter=x"}); err == nil {
		t.Error("adapter=x accepted")
	}
	names, err := parseNames([]string{"amb=12"})
	if err != nil || names[12] != "amb" {
		t.Errorf("amb=12: %v, %v", names, err)
	}
}
