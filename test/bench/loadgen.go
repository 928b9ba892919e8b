package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// callGrace is how long a call may run past the end of its run before it
// is cancelled and counted as an error.
const callGrace = 10 * time.Second

// caller makes one call with a body of the size it was made for, reads the
// whole answer and checks that it is the echo expected. One worker owns
// it, so it may keep buffers.
type caller func(ctx context.Context) error

// callerFactory makes a worker's caller for bodies of size bytes.
type callerFactory func(size int) (caller, error)

// loadResult is one closed-loop run of one row and configuration.
type loadResult struct {
	lat      []time.Duration // every successful call of the measured window
	errors   int64           // failed calls in the measured window
	total    int64           // calls made, warm-up and failures included
	elapsed  time.Duration   // from the window's start to the end of its last call
	firstErr error
}

// runLoad runs conc workers, each making one call after another with no
// pause (closed loop), for warmup and then for duration. It records the
// latency of every call that starts in the measured window, from just
// before the request is sent to the end of reading the answer. Calls that
// start during warm-up are not recorded; a call in flight at the end is
// waited for.
func runLoad(ctx context.Context, newCaller callerFactory, conc, size int, warmup, duration time.Duration) (loadResult, error) {
	callers := make([]caller, conc)
	for i := range callers {
		c, err := newCaller(size)
		if err != nil {
			return loadResult{}, fmt.Errorf("make caller: %w", err)
		}
		callers[i] = c
	}
	measureFrom := time.Now().Add(warmup)
	end := measureFrom.Add(duration)
	rctx, cancel := context.WithDeadline(ctx, end.Add(callGrace))
	defer cancel()

	type workerResult struct {
		lat      []time.Duration
		errors   int64
		total    int64
		lastEnd  time.Time
		firstErr error
	}
	results := make([]workerResult, conc)
	var wg sync.WaitGroup
	for i, call := range callers {
		wg.Go(func() {
			w := &results[i]
			w.lat = make([]time.Duration, 0, 4096)
			for {
				start := time.Now()
				if !start.Before(end) || rctx.Err() != nil {
					return
				}
				err := call(rctx)
				stop := time.Now()
				w.total++
				if start.Before(measureFrom) {
					continue
				}
				if err != nil {
					w.errors++
					if w.firstErr == nil {
						w.firstErr = err
					}
					// A failing target fails fast; do not spin on it.
					time.Sleep(time.Millisecond)
					continue
				}
				w.lat = append(w.lat, stop.Sub(start))
				if stop.After(w.lastEnd) {
					w.lastEnd = stop
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}

	var r loadResult
	lastEnd := end
	n := 0
	for _, w := range results {
		n += len(w.lat)
	}
	r.lat = make([]time.Duration, 0, n)
	for _, w := range results {
		r.lat = append(r.lat, w.lat...)
		r.errors += w.errors
		r.total += w.total
		if w.lastEnd.After(lastEnd) {
			lastEnd = w.lastEnd
		}
		if r.firstErr == nil {
			r.firstErr = w.firstErr
		}
	}
	r.elapsed = lastEnd.Sub(measureFrom)
	if errors.Is(r.firstErr, context.DeadlineExceeded) {
		r.firstErr = fmt.Errorf("no answer within %v of the run's end: %w", callGrace, r.firstErr)
	}
	return r, nil
}
