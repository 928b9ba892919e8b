package ambassador

import (
	"sync"
	"sync/atomic"
	"time"
)

// ringBuckets is the number of buckets a counterRing divides its window
// into.
const ringBuckets = 10

// counterRing counts two things (calls and failures, or calls and
// retries) over a sliding window, in buckets of a tenth of it: adding is
// two atomic operations; a bucket is cleared under a lock when the ring
// comes round to it again.
type counterRing struct {
	span    int64 // a bucket's length, nanoseconds
	mu      sync.Mutex
	buckets [ringBuckets]ringBucket
}

type ringBucket struct {
	epoch atomic.Int64 // which span the bucket counts: now / span
	a, b  atomic.Int64
}

func newCounterRing(window time.Duration) *counterRing {
	return &counterRing{span: max(int64(window)/ringBuckets, 1)}
}

// add counts da and db at now (unix nanoseconds).
func (r *counterRing) add(now, da, db int64) {
	epoch := now / r.span
	bk := &r.buckets[epoch%ringBuckets]
	if bk.epoch.Load() != epoch {
		r.mu.Lock()
		if bk.epoch.Load() != epoch {
			bk.a.Store(0)
			bk.b.Store(0)
			bk.epoch.Store(epoch)
		}
		r.mu.Unlock()
	}
	if da != 0 {
		bk.a.Add(da)
	}
	if db != 0 {
		bk.b.Add(db)
	}
}

// sum returns the counts of the window ending at now.
func (r *counterRing) sum(now int64) (a, b int64) {
	epoch := now / r.span
	for i := range r.buckets {
		bk := &r.buckets[i]
		if e := bk.epoch.Load(); e > epoch-ringBuckets && e <= epoch {
			a += bk.a.Load()
			b += bk.b.Load()
		}
	}
	return a, b
}

// budgetWindow is the window a retry budget counts calls and retries
// over (Linkerd's and Envoy's: 10 s).
const budgetWindow = 10 * time.Second

// retryBudget allows retries while they stay under a share of the calls
// of the last budgetWindow plus a floor per second: however many
// attempts each call may make, an outage cannot multiply the load by
// more than 1 + ratio.
type retryBudget struct {
	ratio    float64
	perWin   float64 // the floor over the window
	counters *counterRing
}

func newRetryBudget(percent, minPerSecond int) *retryBudget {
	return &retryBudget{
		ratio:    float64(percent) / 100,
		perWin:   float64(minPerSecond) * budgetWindow.Seconds(),
		counters: newCounterRing(budgetWindow),
	}
}

// deposit counts a call.
func (b *retryBudget) deposit(now int64) { b.counters.add(now, 1, 0) }

// withdraw takes a retry from the budget; false when it is spent.
func (b *retryBudget) withdraw(now int64) bool {
	if b.remaining(now) < 1 {
		return false
	}
	b.counters.add(now, 0, 1)
	return true
}

// remaining is how many retries the budget allows at now.
func (b *retryBudget) remaining(now int64) float64 {
	calls, retries := b.counters.sum(now)
	return b.ratio*float64(calls) + b.perWin - float64(retries)
}
