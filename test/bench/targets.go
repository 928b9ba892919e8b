package main

import (
	"fmt"
	"time"
)

// Memory targets for each sidecar process, in bytes (MB = 10^6 bytes).
const (
	idleRSSTarget = 20e6
	loadRSSTarget = 40e6
)

// The concurrencies and body size the targets are stated at.
const (
	targetLowConc  = 1
	targetHighConc = 32
	targetSize     = 128
)

// verdict is one target, evaluated on a run's numbers.
type verdict struct {
	target   string
	measured string
	limit    string
	status   string // met, missed, not measured
	margin   string
}

// evaluate checks the targets against this run. A target whose
// rows or configurations were not measured says so.
func evaluate(e *env, res *results, sizes []int) []verdict {
	var vs []verdict
	mesh, raw := meshRowName("nats"), rawRowName("nats")

	// 1. Latency at c=1: a mesh call costs the broker's round trip plus two
	// HTTP hops, plus 50 µs.
	t := "busmesh NATS HTTP p50 ≤ raw NATS p50 + 2 × direct-HTTP p50 + 50 µs (128 B, c=1)"
	m, r, d := res.get(mesh, targetLowConc, targetSize), res.get(raw, targetLowConc, targetSize), res.get(rowDirectHTTP, targetLowConc, targetSize)
	if m == nil || r == nil || d == nil {
		vs = append(vs, notMeasured(t, mesh, raw, rowDirectHTTP))
	} else {
		limit := r.p50 + 2*d.p50 + 50*time.Microsecond
		v := atMostDur(t, m.p50, limit)
		v.limit = fmt.Sprintf("%s (%s + 2 × %s + 50 µs)", fmtDur(limit), fmtDur(r.p50), fmtDur(d.p50))
		vs = append(vs, withErrors(v, m))
	}

	// 2. Throughput at c=32 against the composed floor: two HTTP hops and a
	// broker round trip, each at its own measured rate.
	t = "busmesh NATS HTTP req/s ≥ 60 % of 1 / (2/direct-HTTP + 1/raw-NATS) (128 B, c=32)"
	m, r, d = res.get(mesh, targetHighConc, targetSize), res.get(raw, targetHighConc, targetSize), res.get(rowDirectHTTP, targetHighConc, targetSize)
	if m == nil || r == nil || d == nil || r.rps == 0 || d.rps == 0 {
		vs = append(vs, notMeasured(t, mesh, raw, rowDirectHTTP))
	} else {
		floor := 1 / (2/d.rps + 1/r.rps)
		v := atLeast(t, m.rps, 0.6*floor, fmtRPS)
		v.limit = fmt.Sprintf("%s (60 %% of %s)", fmtRPS(0.6*floor), fmtRPS(floor))
		vs = append(vs, withErrors(v, m))
	}

	// 3. Against the classic sidecar shape, two reverse proxies: requests/s
	// at c=32 on every broker, latency at c=1 over NATS.
	for _, size := range sizes {
		for _, b := range []string{"nats", "rabbitmq", "kafka"} {
			vs = append(vs, beatsChain(res, b, size))
		}
		t = fmt.Sprintf("busmesh NATS HTTP p50 ≤ 1.1 × proxy-chain p50 (%s, c=1)", fmtSize(size))
		m, p := res.get(mesh, targetLowConc, size), res.get(rowProxyChain, targetLowConc, size)
		if m == nil || p == nil {
			vs = append(vs, notMeasured(t, mesh, rowProxyChain))
		} else {
			limit := time.Duration(1.1 * float64(p.p50))
			v := atMostDur(t, m.p50, limit)
			v.limit = fmt.Sprintf("%s (1.1 × %s)", fmtDur(limit), fmtDur(p.p50))
			vs = append(vs, withErrors(v, m))
		}
	}

	// 3b. Each sidecar's CPU per call under load against one reverse
	// proxy's: the cost the mesh adds to the machine.
	for _, size := range sizes {
		for _, b := range []string{"nats", "rabbitmq", "kafka"} {
			vs = append(vs, cheaperThanProxy(res, b, size))
		}
	}

	// 4. On the brokers with heavier clients, busmesh adds little to the
	// broker's own round trip.
	for _, b := range []string{"kafka", "rabbitmq"} {
		mesh, raw := meshRowName(b), rawRowName(b)
		t := fmt.Sprintf("busmesh %s HTTP p50 ≤ 1.3 × raw %s p50 (128 B, c=1)", brokerTitle(b), brokerTitle(b))
		m, r := res.get(mesh, targetLowConc, targetSize), res.get(raw, targetLowConc, targetSize)
		if m == nil || r == nil {
			vs = append(vs, notMeasured(t, mesh, raw))
			continue
		}
		limit := time.Duration(1.3 * float64(r.p50))
		v := atMostDur(t, m.p50, limit)
		v.limit = fmt.Sprintf("%s (1.3 × %s)", fmtDur(limit), fmtDur(r.p50))
		vs = append(vs, withErrors(v, m))
	}

	// 5. Memory of every sidecar process.
	for _, row := range e.rows {
		for _, p := range row.procs {
			if !p.sidecar {
				continue
			}
			mm := res.mem[memKey{row.name, p.role}]
			if mm == nil {
				continue
			}
			name := row.name + " " + p.role
			vs = append(vs, atMost(name+": RSS idle ≤ 20 MB", float64(mm.idle), idleRSSTarget, fmtMB))
			t := fmt.Sprintf("%s: peak RSS under c=%d ≤ 40 MB", name, e.maxConc)
			if e.maxConc != targetHighConc {
				t += fmt.Sprintf(" (the target says c=%d)", targetHighConc)
			}
			if mm.peak == 0 {
				vs = append(vs, verdict{target: t, status: "not measured"})
				continue
			}
			vs = append(vs, atMost(t, float64(mm.peak), loadRSSTarget, fmtMB))
		}
	}
	for _, s := range e.skipped {
		if s.row == meshRowName("kafka") || s.row == meshRowName("rabbitmq") || s.row == mesh || s.row == rowMeshGRPC {
			vs = append(vs, verdict{target: s.row + " ambassador and adapter: RSS idle ≤ 20 MB, peak under load ≤ 40 MB", status: "not measured", margin: "row skipped"})
		}
	}
	return vs
}

// chainFactor is how many times the proxy chain's requests/s a mesh row
// must make at c=32: 1.2 × at 128 B over NATS, where the broker's round
// trip costs less than an HTTP hop; as many elsewhere.
func chainFactor(broker string, size int) float64 {
	if broker == "nats" && size == targetSize {
		return 1.2
	}
	return 1
}

// beatsChain is the verdict on a mesh row's requests/s at c=32 against the
// proxy chain's. Its limit also names the row's composed floor, 1 /
// (2/direct-HTTP + 1/raw-<broker>): the rate of the mesh's own hops, which
// no sidecar can pass. A chain above that floor cannot be beaten in that
// run whatever the sidecars do, and the margin says so.
func beatsChain(res *results, broker string, size int) verdict {
	mesh, raw := meshRowName(broker), rawRowName(broker)
	f := chainFactor(broker, size)
	t := fmt.Sprintf("busmesh %s HTTP req/s ≥ proxy-chain req/s (%s, c=32)", brokerTitle(broker), fmtSize(size))
	if f != 1 {
		t = fmt.Sprintf("busmesh %s HTTP req/s ≥ %.1f × proxy-chain req/s (%s, c=32)", brokerTitle(broker), f, fmtSize(size))
	}
	m, p := res.get(mesh, targetHighConc, size), res.get(rowProxyChain, targetHighConc, size)
	if m == nil || p == nil {
		return notMeasured(t, mesh, rowProxyChain)
	}
	v := withErrors(atLeast(t, m.rps, f*p.rps, fmtRPS), m)
	v.limit = fmtRPS(p.rps)
	if f != 1 {
		v.limit = fmt.Sprintf("%s (%.1f × %s)", fmtRPS(f*p.rps), f, fmtRPS(p.rps))
	}
	r, d := res.get(raw, targetHighConc, size), res.get(rowDirectHTTP, targetHighConc, size)
	if r == nil || d == nil || r.rps == 0 || d.rps == 0 {
		return v
	}
	floor := 1 / (2/d.rps + 1/r.rps)
	v.margin += fmt.Sprintf("; the row at %.0f %% of its composed floor %s (1 / (2/direct-HTTP + 1/raw)), the limit at %.0f %%", 100*m.rps/floor, fmtRPS(floor), 100*f*p.rps/floor)
	return v
}

// cheaperThanProxy is the verdict on a mesh row's sidecars' CPU per call
// at c=32: each of them below the cheaper of the chain's two proxies.
func cheaperThanProxy(res *results, broker string, size int) verdict {
	mesh := meshRowName(broker)
	t := fmt.Sprintf("busmesh %s ambassador and adapter CPU per call < one proxy's (%s, c=32)", brokerTitle(broker), fmtSize(size))
	m, p := res.get(mesh, targetHighConc, size), res.get(rowProxyChain, targetHighConc, size)
	if m == nil || p == nil {
		return notMeasured(t, mesh, rowProxyChain)
	}
	amb, okA := m.cpuPer10k["ambassador"]
	ad, okD := m.cpuPer10k["adapter"]
	p1, ok1 := p.cpuPer10k["proxy 1"]
	p2, ok2 := p.cpuPer10k["proxy 2"]
	if !okA || !okD || !ok1 || !ok2 {
		return verdict{target: t, status: "not measured", margin: "a process's CPU time could not be read"}
	}
	perCall := func(f float64) string { return fmt.Sprintf("%.0f µs", f/float64(time.Microsecond)/1e4) }
	v := atMost(t, float64(max(amb, ad)), float64(min(p1, p2)), perCall)
	v.measured = fmt.Sprintf("%s / %s", perCall(float64(amb)), perCall(float64(ad)))
	v.limit = fmt.Sprintf("%s (the cheaper proxy; the other %s)", perCall(float64(min(p1, p2))), perCall(float64(max(p1, p2))))
	return v
}

// brokerTitle is a broker's name as the targets write it.
func brokerTitle(broker string) string {
	switch broker {
	case "nats":
		return "NATS"
	case "rabbitmq":
		return "RabbitMQ"
	case "kafka":
		return "Kafka"
	}
	return broker
}

func notMeasured(target string, rows ...string) verdict {
	return verdict{target: target, status: "not measured", margin: fmt.Sprintf("needs rows %v at that configuration", rows)}
}

// withErrors marks a verdict whose measurement had failed calls.
func withErrors(v verdict, s *cellStats) verdict {
	if s.errors > 0 {
		v.margin += fmt.Sprintf("; %d failed calls", s.errors)
	}
	return v
}

// atMost is a verdict for measured ≤ limit.
func atMost(target string, measured, limit float64, format func(float64) string) verdict {
	v := verdict{target: target, measured: format(measured), limit: format(limit)}
	diff := limit - measured
	if diff >= 0 {
		v.status, v.margin = "met", fmt.Sprintf("%s under (%.0f %%)", format(diff), 100*diff/limit)
	} else {
		v.status, v.margin = "missed", fmt.Sprintf("%s over (%.0f %%)", format(-diff), -100*diff/limit)
	}
	return v
}

// atLeast is a verdict for measured ≥ limit.
func atLeast(target string, measured, limit float64, format func(float64) string) verdict {
	v := verdict{target: target, measured: format(measured), limit: format(limit)}
	diff := measured - limit
	if diff >= 0 {
		v.status, v.margin = "met", fmt.Sprintf("%s above (%.0f %%)", format(diff), 100*diff/limit)
	} else {
		v.status, v.margin = "missed", fmt.Sprintf("%s short (%.0f %%)", format(-diff), -100*diff/limit)
	}
	return v
}

func atMostDur(target string, measured, limit time.Duration) verdict {
	return atMost(target, float64(measured), float64(limit), func(f float64) string { return fmtDur(time.Duration(f)) })
}
