package main

import (
	"strings"
	"testing"
	"time"
)

// stated puts a measured cell into res without rounds behind it.
func stated(res *results, row string, conc, size int, s cellStats) {
	res.cells[cellKey{row, config{conc, size}}] = &cell{stats: &s}
}

// find returns the verdict whose target starts with prefix.
func find(t *testing.T, vs []verdict, prefix string) verdict {
	t.Helper()
	for _, v := range vs {
		if strings.HasPrefix(v.target, prefix) {
			return v
		}
	}
	t.Fatalf("no verdict starts with %q", prefix)
	return verdict{}
}

// TestChainTargets: the requests/s targets against the proxy chain,
// 1.2 × at 128 B over NATS and 1 × elsewhere, with the row's composed floor
// in the margin; and each sidecar's CPU per call against the cheaper proxy.
func TestChainTargets(t *testing.T) {
	res := newResults()
	const big = 16 << 10
	perCall := func(us int) time.Duration { return time.Duration(us) * time.Microsecond * 10000 }
	stated(res, rowProxyChain, 32, 128, cellStats{rps: 5000, cpuPer10k: map[string]time.Duration{"proxy 1": perCall(90), "proxy 2": perCall(100)}})
	stated(res, rowProxyChain, 32, big, cellStats{rps: 2000, cpuPer10k: map[string]time.Duration{"proxy 1": perCall(150), "proxy 2": perCall(140)}})
	stated(res, rowDirectHTTP, 32, big, cellStats{rps: 10000})
	// NATS at 128 B: 1.1 × the chain is short of 1.2 ×.
	stated(res, meshRowName("nats"), 32, 128, cellStats{rps: 5500, cpuPer10k: map[string]time.Duration{"ambassador": perCall(40), "adapter": perCall(35)}})
	// RabbitMQ at 16 KiB: its floor is 1 / (2/10000 + 1/2500) = 1667, under the chain.
	stated(res, rawRowName("rabbitmq"), 32, big, cellStats{rps: 2500})
	stated(res, meshRowName("rabbitmq"), 32, big, cellStats{rps: 1600, cpuPer10k: map[string]time.Duration{"ambassador": perCall(120), "adapter": perCall(145)}})
	// Kafka at 16 KiB: above the chain, and both sidecars cheaper than a proxy.
	stated(res, meshRowName("kafka"), 32, big, cellStats{rps: 2100, errors: 3, cpuPer10k: map[string]time.Duration{"ambassador": perCall(100), "adapter": perCall(139)}})

	vs := evaluate(&env{maxConc: 32}, res, []int{128, big})

	v := find(t, vs, "busmesh NATS HTTP req/s ≥ 1.2 × proxy-chain req/s (128 B, c=32)")
	if v.status != "missed" || v.limit != "6000 (1.2 × 5000)" {
		t.Errorf("NATS 128 B at 1.1 × the chain: %+v, want missed against 6000", v)
	}
	v = find(t, vs, "busmesh RabbitMQ HTTP req/s ≥ proxy-chain req/s (16 KiB, c=32)")
	if v.status != "missed" || !strings.Contains(v.margin, "96 % of its composed floor 1667 (1 / (2/direct-HTTP + 1/raw)), the limit at 120 %") {
		t.Errorf("RabbitMQ 16 KiB below a chain above its floor: %+v", v)
	}
	v = find(t, vs, "busmesh Kafka HTTP req/s ≥ proxy-chain req/s (16 KiB, c=32)")
	if v.status != "met" || !strings.Contains(v.margin, "3 failed calls") || strings.Contains(v.margin, "floor") {
		t.Errorf("Kafka 16 KiB, no raw row measured: %+v", v)
	}
	v = find(t, vs, "busmesh RabbitMQ HTTP req/s ≥ proxy-chain req/s (128 B")
	if v.status != "not measured" {
		t.Errorf("a row not run: %+v", v)
	}

	v = find(t, vs, "busmesh NATS ambassador and adapter CPU per call < one proxy's (128 B")
	if v.status != "met" || v.measured != "40 µs / 35 µs" || !strings.HasPrefix(v.limit, "90 µs") {
		t.Errorf("NATS sidecars under the cheaper proxy: %+v", v)
	}
	v = find(t, vs, "busmesh RabbitMQ ambassador and adapter CPU per call < one proxy's (16 KiB")
	if v.status != "missed" {
		t.Errorf("a RabbitMQ adapter dearer than the cheaper proxy (145 against 140 µs): %+v", v)
	}
	v = find(t, vs, "busmesh Kafka ambassador and adapter CPU per call < one proxy's (16 KiB")
	if v.status != "met" {
		t.Errorf("Kafka sidecars at 100 and 139 µs against 140: %+v", v)
	}
}
