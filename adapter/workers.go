package adapter

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
)

// workers serve calls, at most max at once, started as needed and kept: a
// worker's stack has grown to what a call needs, so the next call does not
// grow a new goroutine's.
//
// When every worker is busy, a call waits — but only if it can still be
// served before its deadline: the expected wait (the calls ahead of it
// times the application's moving service time, over the workers) plus its
// own service time must fit in what is left of its deadline. A call that
// cannot is answered overloaded at once, costing neither a worker nor the
// application anything, instead of timing out after holding a place.
//
// A burst waits as long as its deadlines allow, but a standing line — one
// that has not emptied for standingAfter — is overload, not a burst: then
// a call waits only if it is served within about one service time (as
// CoDel keeps a standing queue short), and the rest are answered at once.
// A longer line would not serve more calls, only answer them later.
//
// While the oldest waiting call has waited longer than lifoAfter, workers
// take the newest first (adaptive LIFO, as large RPC servers do): fresh
// calls, which have their whole deadline left, are served rather than
// starved behind stale ones. A waiting call that can no longer be served
// in time is answered overloaded when a worker next looks, not left to
// its caller's deadline.
type workers struct {
	max     int
	maxWait int
	serve   func(*envelope.Request)
	// refuse answers a call that cannot be served in time.
	refuse func(req *envelope.Request, detail string)
	cost   serviceTime

	mu      sync.Mutex
	wake    sync.Cond
	waiting []waitingCall // oldest first
	// queued counts the waiting calls not handed to an idle worker, and
	// lineSince is when it last stopped being 0: calls handed over are in
	// the line only until their worker wakes, and make no standing line.
	queued    int
	lineSince time.Time
	// sweptAt is when the line was last swept of calls too late to serve.
	sweptAt time.Time
	started int
	idle    int
	closed  bool

	busy    atomic.Int32 // serving a call
	running sync.WaitGroup

	now func() time.Time // time.Now; a test's clock
	// measured, when set, is told when the first call has been measured:
	// the adapter announces its service time at once, since callers size
	// what they send from it (ambassador/capacity.go).
	measured func()
}

type waitingCall struct {
	req   *envelope.Request
	since time.Time
	// handoff: the call was given to an idle worker, not made to wait, so
	// nothing is checked before it is served.
	handoff bool
}

// lifoAfter is how long the oldest waiting call may wait before workers
// take the newest first.
const lifoAfter = 100 * time.Millisecond

// maxWaiting bounds the calls waiting for a worker, whatever their
// deadlines, so a flood cannot hold the adapter's memory.
const maxWaiting = 1024

// standingAfter is how long the waiting line must stay non-empty to be a
// standing line (CoDel's interval).
const standingAfter = 100 * time.Millisecond

// sweepEvery is how often at most a worker sweeps the whole waiting line
// (the call it takes is checked every time): often enough that a call is
// refused soon after it stops fitting, rarely enough that a long line
// costs little per call.
const sweepEvery = 5 * time.Millisecond

// standingWait is the shortest wait a standing line still admits, for an
// application whose calls take less: a line of one service time would be
// too short to keep fast workers busy between arrivals.
const standingWait = 20 * time.Millisecond

func newWorkers(max int, serve func(*envelope.Request), refuse func(*envelope.Request, string)) *workers {
	w := &workers{max: max, maxWait: maxWaiting, serve: serve, refuse: refuse, now: time.Now}
	w.wake.L = &w.mu
	return w
}

// dispatch hands a call to an idle worker, or starts one while under the
// limit, or lets it wait if it can still be served in time, or refuses it.
// It never blocks.
func (w *workers) dispatch(_ context.Context, req *envelope.Request) {
	now := w.now()
	w.mu.Lock()
	switch {
	case w.closed:
		w.mu.Unlock()
		// A delivery still on its way when the instance left its
		// subjects (a broker's prefetch): told at once, not left to time
		// out, unless its caller has given up.
		if req.Deadline == 0 || now.UnixNano() < req.Deadline {
			w.refuse(req, shedDetail)
		}
		return
	case w.idle > len(w.waiting):
		w.enqueue(waitingCall{req, now, true})
		w.wake.Signal()
		w.mu.Unlock()
		return
	case w.started < w.max:
		w.started++
		w.running.Add(1)
		w.mu.Unlock()
		go w.work(req)
		return
	}
	if why := w.admit(req, now); why != "" {
		w.mu.Unlock()
		w.refuse(req, why)
		return
	}
	w.enqueue(waitingCall{req, now, false})
	w.mu.Unlock()
}

// admit says why a call that finds every worker busy may not wait, or ""
// when it may. w.mu is held.
func (w *workers) admit(req *envelope.Request, now time.Time) string {
	if len(w.waiting) >= w.maxWait {
		return "the instance has as many calls waiting as it keeps"
	}
	cost := w.cost.get()
	if cost == 0 {
		// Before the first call is measured, one round waits at most.
		if len(w.waiting) >= w.max {
			return "the instance cannot serve the call before its deadline"
		}
		return ""
	}
	wait := time.Duration(len(w.waiting)/w.max+1) * cost
	if w.queued > 0 && now.Sub(w.lineSince) > standingAfter && wait > max(cost, standingWait) {
		return "the instance is overloaded: its waiting line has not emptied for " + standingAfter.String()
	}
	if !w.inTime(req, wait, now) {
		return "the instance cannot serve the call before its deadline"
	}
	return ""
}

// enqueue adds a call to the waiting line. w.mu is held.
func (w *workers) enqueue(c waitingCall) {
	if !c.handoff {
		if w.queued == 0 {
			w.lineSince = c.since
		}
		w.queued++
	}
	w.waiting = append(w.waiting, c)
}

// taken notes that c left the waiting line. w.mu is held.
func (w *workers) taken(c waitingCall) {
	if !c.handoff {
		w.queued--
	}
}

// inTime reports whether a call that waits for wait, then takes the
// application's usual time, is answered before its deadline. The answer's
// way back and the estimate's error take a margin: half a service time
// and answerTrip.
func (w *workers) inTime(req *envelope.Request, wait time.Duration, now time.Time) bool {
	if req.Deadline == 0 {
		return true
	}
	cost := w.cost.get()
	return now.Add(wait+cost+cost/2+answerTrip).UnixNano() <= req.Deadline
}

// answerTrip is the margin kept for an answer's way back to its caller.
const answerTrip = 10 * time.Millisecond

// work serves calls until the workers close and none waits.
func (w *workers) work(req *envelope.Request) {
	defer w.running.Done()
	for {
		w.busy.Add(1)
		start := w.now()
		w.serve(req)
		if w.cost.observe(w.now().Sub(start)) && w.measured != nil {
			w.measured()
		}
		w.busy.Add(-1)
		if req = w.next(); req == nil {
			return
		}
	}
}

// next waits for the next call to serve; nil when the workers close.
// Calls that can no longer be served in time are refused on the way.
func (w *workers) next() *envelope.Request {
	w.mu.Lock()
	for {
		for len(w.waiting) == 0 {
			if w.closed {
				w.mu.Unlock()
				return nil
			}
			w.idle++
			w.wake.Wait()
			w.idle--
		}
		now := w.now()
		if now.Sub(w.sweptAt) >= sweepEvery {
			w.sweptAt = now
			if late := w.sweep(now); len(late) > 0 {
				// Answered apart: the worker serves the next call meanwhile.
				w.running.Go(func() {
					for _, req := range late {
						w.refuse(req, "the call waited too long to be served before its deadline")
					}
				})
			}
			if len(w.waiting) == 0 {
				continue
			}
		}
		var c waitingCall
		if now.Sub(w.waiting[0].since) > lifoAfter {
			c = w.waiting[len(w.waiting)-1]
			w.waiting[len(w.waiting)-1] = waitingCall{}
			w.waiting = w.waiting[:len(w.waiting)-1]
		} else {
			c = w.waiting[0]
			w.waiting[0] = waitingCall{}
			w.waiting = w.waiting[1:]
		}
		w.taken(c)
		if c.req.Deadline != 0 && now.UnixNano() >= c.req.Deadline {
			continue // its caller has given up: nobody to answer
		}
		if !c.handoff && !w.inTime(c.req, 0, now) {
			w.mu.Unlock()
			w.refuse(c.req, "the call waited too long to be served before its deadline")
			w.mu.Lock()
			continue
		}
		w.mu.Unlock()
		return c.req
	}
}

// sweep takes out of the waiting line every call that can no longer be
// served before its deadline, and returns those whose callers still wait
// for an answer (the others have given up: nobody to answer). Calls handed
// to an idle worker are not checked. w.mu is held.
func (w *workers) sweep(now time.Time) []*envelope.Request {
	var late []*envelope.Request
	kept := w.waiting[:0]
	for _, c := range w.waiting {
		switch {
		case c.handoff || w.inTime(c.req, 0, now):
			kept = append(kept, c)
		case now.UnixNano() < c.req.Deadline:
			late = append(late, c.req)
			w.taken(c)
		default:
			w.taken(c)
		}
	}
	clear(w.waiting[len(kept):])
	w.waiting = kept
	return late
}

// close tells the workers that no call comes any more: each ends once
// none waits. wait waits for them.
func (w *workers) close() {
	w.mu.Lock()
	w.closed = true
	w.wake.Broadcast()
	w.mu.Unlock()
}

func (w *workers) wait() { w.running.Wait() }

// shed closes the workers and answers every call still waiting with
// refuse(detail), at once: once a shutdown's time is up, serving the line
// to its end would overrun it by the whole line. Workers take no call
// after it. A call whose deadline has passed is dropped: its caller has
// given up.
func (w *workers) shed(detail string) {
	w.mu.Lock()
	w.closed = true
	line := w.waiting
	w.waiting, w.queued = nil, 0
	w.wake.Broadcast()
	w.mu.Unlock()
	now := w.now().UnixNano()
	for _, c := range line {
		if c.req.Deadline == 0 || now < c.req.Deadline {
			w.refuse(c.req, detail)
		}
	}
}

// busyNow is the number of calls being served.
func (w *workers) busyNow() int { return int(w.busy.Load()) }

// serviceTime is a moving estimate of how long a worker is taken by a
// call: an exponentially weighted average, quick to follow a slowdown.
type serviceTime struct{ ns atomic.Int64 }

func (s *serviceTime) get() time.Duration { return time.Duration(s.ns.Load()) }

// observe adds a measurement; first reports whether it was the first.
func (s *serviceTime) observe(d time.Duration) (first bool) {
	old := s.ns.Load()
	if old == 0 {
		return s.ns.CompareAndSwap(0, max(int64(d), 1))
	}
	s.ns.Store(max(old+(int64(d)-old)/8, 1)) // racing updates may lose one: an estimate
	return false
}
