package ambassador

import (
	"fmt"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
)

func TestServiceFromHost(t *testing.T) {
	tests := []struct {
		host   string
		want   string
		wantOK bool
	}{
		{"orders", "orders", true},
		{"orders.mesh", "orders", true},
		{"orders.mesh:15001", "orders", true},
		{"Orders.Mesh.", "orders", true},
		{"127.0.0.1:15001", "", false},
		{"[::1]:15001", "", false},
		{"orders.example.com", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := serviceFromHost(tt.host)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("serviceFromHost(%q) = %q, %v; want %q, %v", tt.host, got, ok, tt.want, tt.wantOK)
		}
	}
}

func instances(specs ...[3]string) []discovery.Instance {
	var out []discovery.Instance
	for _, s := range specs {
		out = append(out, discovery.Instance{Name: s[0], Sidecar: s[0], Version: s[1], Zone: s[2], Healthy: true})
	}
	return out
}

func TestBalancerPolicy(t *testing.T) {
	healthy := instances([3]string{"a", "v1", "z1"}, [3]string{"b", "v2", "z1"}, [3]string{"c", "v2", "z2"})
	tests := []struct {
		name   string
		policy config.ServicePolicy
		want   map[string]bool // the instances that may be picked
	}{
		{"any", config.ServicePolicy{}, map[string]bool{"a": true, "b": true, "c": true}},
		{"version", config.ServicePolicy{Version: "v2"}, map[string]bool{"b": true, "c": true}},
		{"zone", config.ServicePolicy{PreferZone: "z2"}, map[string]bool{"c": true}},
		{"zone then version", config.ServicePolicy{Version: "v2", PreferZone: "z1"}, map[string]bool{"b": true}},
		{"zone with none healthy falls back", config.ServicePolicy{PreferZone: "z9"}, map[string]bool{"a": true, "b": true, "c": true}},
		{"no such version", config.ServicePolicy{Version: "v9"}, map[string]bool{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(broker.NewSubjects(""), nil, nil)
			picked := map[string]bool{}
			for range 200 {
				st := b.pick("svc", healthy, tt.policy, nil)
				if st == nil {
					continue
				}
				name := st.subject[len("busmesh.default.svc.svc.i."):]
				if !tt.want[name] {
					t.Fatalf("picked %q, want one of %v", name, tt.want)
				}
				picked[name] = true
			}
			if len(picked) != len(tt.want) {
				t.Errorf("picked %v over 200 calls, want each of %v", picked, tt.want)
			}
		})
	}
}

func TestBalancerAvoidsSlowAndBusy(t *testing.T) {
	b := newBalancer(broker.NewSubjects(""), nil, nil)
	healthy := instances([3]string{"fast1"}, [3]string{"fast2"}, [3]string{"slow"})
	for i, inst := range healthy {
		st := b.statsFor("svc", healthy, i)
		rtt := time.Millisecond
		if inst.Name == "slow" {
			rtt = 20 * time.Millisecond
		}
		st.start()
		st.finish(rtt, true)
	}
	counts := map[string]int{}
	for range 1000 {
		st := b.pick("svc", healthy, config.ServicePolicy{}, nil)
		counts[st.subject[len("busmesh.default.svc.svc.i."):]]++
	}
	if counts["slow"] != 0 {
		t.Errorf("the slow instance was picked %d of 1000 times, want never: any pair holds a faster one", counts["slow"])
	}
	// Calls in flight weigh: fast1 busy with 30 calls loses to fast2.
	st := b.statsFor("svc", healthy, 0)
	for range 30 {
		st.start()
	}
	counts = map[string]int{}
	for range 1000 {
		counts[b.pick("svc", healthy, config.ServicePolicy{}, nil).subject[len("busmesh.default.svc.svc.i."):]]++
	}
	if counts["fast1"] > counts["fast2"]/4 {
		t.Errorf("picks with fast1 busy: %v, want fast2 far ahead", counts)
	}
	// avoid skips an instance (the retry after an undelivered request).
	for range 100 {
		if got := b.pick("svc", healthy[:2], config.ServicePolicy{}, st); got == st {
			t.Fatal("pick returned the instance it was told to avoid")
		}
	}
}

// TestBalancerForgets: the stats of instances that left are dropped once
// they outnumber the healthy ones (2× plus 16), so churn does not grow the
// balancer.
func TestBalancerForgets(t *testing.T) {
	b := newBalancer(broker.NewSubjects(""), nil, nil)
	for round := range 50 {
		healthy := instances([3]string{"stays"}, [3]string{string(rune('a'+round%26)) + "-" + string(rune('0'+round/26))})
		b.pick("svc", healthy, config.ServicePolicy{}, nil)
		b.statsFor("svc", healthy, 1)
	}
	b.mu.Lock()
	n := len(b.stats)
	b.mu.Unlock()
	if n > 2*2+16+1 {
		t.Errorf("the balancer holds stats of %d instances after churn through 50, want at most 21 for the 2 current", n)
	}
}

// TestStatsSwept: the stats of instances that left are dropped once they
// outnumber the healthy ones, so the map stays the size of the mesh
// through churn; those of healthy instances stay.
func TestStatsSwept(t *testing.T) {
	b := newBalancer(broker.NewSubjects(""), nil, nil)
	var healthy []discovery.Instance
	for gen := range 50 { // 50 generations of 10 instances, each replacing the last
		healthy = healthy[:0]
		for i := range 10 {
			name := fmt.Sprintf("g%d-%d", gen, i)
			healthy = append(healthy, discovery.Instance{Name: name, Sidecar: name, Healthy: true})
		}
		for i := range healthy {
			b.statsFor("svc", healthy, i)
		}
	}
	b.mu.Lock()
	n := len(b.stats)
	b.mu.Unlock()
	if n > 3*10+16 {
		t.Errorf("%d stats kept after 500 instances came and went, 10 healthy", n)
	}
	for i := range healthy {
		if st := b.statsFor("svc", healthy, i); st == nil || st.instance != healthy[i].Name {
			t.Fatalf("stats of healthy %s lost", healthy[i].Name)
		}
	}
}

// BenchmarkStatsForNewInstances is a direct-mode service of 1,000
// instances seen for the first time: each new one costs a map insert,
// with a sweep now and then (it was a scan of the whole mesh per
// instance: 728 ms for the 1,000 before, a few ms now).
func BenchmarkStatsForNewInstances(b *testing.B) {
	healthy := make([]discovery.Instance, 1000)
	for i := range healthy {
		name := fmt.Sprintf("i-%d", i)
		healthy[i] = discovery.Instance{Name: name, Sidecar: name, Healthy: true}
	}
	for b.Loop() {
		bal := newBalancer(broker.NewSubjects(""), nil, nil)
		for i := range healthy {
			bal.statsFor("svc", healthy, i)
		}
	}
}
