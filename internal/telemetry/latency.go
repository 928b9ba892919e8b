package telemetry

import (
	"math"
	"sync/atomic"
	"time"
)

// latencyBuckets spans 1µs to about 70s in steps of 2^(1/4) (19%).
const latencyBuckets = 104

// LatencyWindow counts latencies into logarithmic buckets, without locks,
// and gives their median since the last reading: an adapter announces its
// application's recent p50 with it.
type LatencyWindow struct {
	counts [latencyBuckets]atomic.Uint64
}

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(4*math.Log2(us)), latencyBuckets-1)
}

// Observe records one latency.
func (w *LatencyWindow) Observe(d time.Duration) { w.counts[bucketOf(d)].Add(1) }

// TakeMedian returns the median since the previous call (0 without
// observations) and starts a new window.
func (w *LatencyWindow) TakeMedian() time.Duration {
	var counts [latencyBuckets]uint64
	var total uint64
	for i := range w.counts {
		counts[i] = w.counts[i].Swap(0)
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	var seen uint64
	for i, c := range counts {
		seen += c
		if 2*seen >= total {
			// The bucket's geometric middle.
			return time.Duration(math.Exp2((float64(i)+0.5)/4) * float64(time.Microsecond))
		}
	}
	return 0
}
