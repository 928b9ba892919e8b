package adapter

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
)

// workersUnderTest drives a pool of workers on a clock the test moves: each
// served call blocks until the test releases it, and every call served or
// refused is recorded by its id.
type workersUnderTest struct {
	*workers
	clock   atomic.Int64 // unix nanoseconds
	release chan struct{}

	mu      sync.Mutex
	served  []string
	refused map[string]string
}

func newWorkersUnderTest(max int, cost time.Duration) *workersUnderTest {
	u := &workersUnderTest{release: make(chan struct{}), refused: map[string]string{}}
	u.clock.Store(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano())
	u.workers = newWorkers(max, func(req *envelope.Request) {
		u.mu.Lock()
		u.served = append(u.served, req.Path)
		u.mu.Unlock()
		<-u.release
	}, func(req *envelope.Request, detail string) {
		u.mu.Lock()
		u.refused[req.Path] = detail
		u.mu.Unlock()
	})
	u.now = func() time.Time { return time.Unix(0, u.clock.Load()) }
	u.cost.observe(cost)
	return u
}

func (u *workersUnderTest) advance(d time.Duration) { u.clock.Add(int64(d)) }

// call dispatches a call with a deadline that far from the test's now.
func (u *workersUnderTest) call(id string, deadline time.Duration) {
	u.dispatch(context.Background(), &envelope.Request{Path: id, Deadline: u.now().Add(deadline).UnixNano()})
}

func (u *workersUnderTest) waitingNow() int {
	u.workers.mu.Lock()
	defer u.workers.mu.Unlock()
	return len(u.waiting)
}

func (u *workersUnderTest) refusal(id string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	why, ok := u.refused[id]
	return why, ok
}

// eventually waits for cond, which worker goroutines make true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (u *workersUnderTest) servedCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.served)
}

// A burst waits as long as its deadlines allow; once the line has stood
// for standingAfter, a call that would wait longer than a service time is
// refused at once, and one that fits in a service time still waits.
func TestWorkersStandingLine(t *testing.T) {
	u := newWorkersUnderTest(2, 50*time.Millisecond)
	defer func() { u.close(); close(u.release); u.wait() }()
	u.call("busy-1", 2*time.Second)
	u.call("busy-2", 2*time.Second)
	eventually(t, "both workers serve", func() bool { return u.servedCount() == 2 })

	for i := range 10 { // a burst: (10/2+1) × 50 ms fits a 2 s deadline
		u.call("burst-"+string(rune('a'+i)), 2*time.Second)
	}
	if n := u.waitingNow(); n != 10 {
		t.Fatalf("%d of a burst of 10 wait, want all", n)
	}

	u.advance(standingAfter + time.Millisecond)
	u.call("late-comer", 2*time.Second)
	why, ok := u.refusal("late-comer")
	if !ok || !strings.Contains(why, "overloaded") {
		t.Fatalf("a call behind a standing line: refused %v (%q), want refused at once as overloaded", ok, why)
	}
	if n := u.waitingNow(); n != 10 {
		t.Fatalf("%d waiting after the refusal, want the burst's 10", n)
	}
}

// A standing line that is short — its calls are served within a service
// time — still takes calls, so the workers never run dry under overload.
func TestWorkersStandingLineKeepsOneRound(t *testing.T) {
	u := newWorkersUnderTest(4, 50*time.Millisecond)
	defer func() { u.close(); close(u.release); u.wait() }()
	for i := range 4 {
		u.call("busy-"+string(rune('a'+i)), 2*time.Second)
	}
	eventually(t, "four workers serve", func() bool { return u.servedCount() == 4 })
	u.call("first", 2*time.Second)
	u.advance(standingAfter + time.Millisecond)
	for i := range 3 { // (1..3)/4+1 service times: one round
		u.call("round-"+string(rune('a'+i)), 2*time.Second)
	}
	if n := u.waitingNow(); n != 4 {
		t.Fatalf("%d waiting, want 4 (one round of a standing line)", n)
	}
	u.call("fifth", 2*time.Second)
	if _, ok := u.refusal("fifth"); !ok {
		t.Fatal("the fifth call behind a standing line waits, want it refused")
	}
}

// A waiting call that can no longer be served before its deadline is
// answered overloaded when a worker frees up, and one whose deadline has
// passed is neither served nor answered: nobody waits for it.
func TestWorkersSweepLateCalls(t *testing.T) {
	u := newWorkersUnderTest(1, 50*time.Millisecond)
	defer func() { u.close(); close(u.release); u.wait() }()
	u.call("busy", 2*time.Second)
	eventually(t, "the worker serves", func() bool { return u.servedCount() == 1 })
	u.call("tight", 500*time.Millisecond)
	u.call("gone", 300*time.Millisecond)
	u.call("roomy", 2*time.Second)
	if n := u.waitingNow(); n != 3 {
		t.Fatalf("%d waiting, want 3", n)
	}

	u.advance(450 * time.Millisecond) // "tight" no longer fits, "gone" has expired
	u.release <- struct{}{}
	eventually(t, "the next call is served", func() bool { return u.servedCount() == 2 })
	eventually(t, `"tight" is refused`, func() bool { _, ok := u.refusal("tight"); return ok })
	if why, _ := u.refusal("tight"); !strings.Contains(why, "deadline") {
		t.Errorf(`"tight" refused (%q), want refused for its deadline`, why)
	}
	if _, ok := u.refusal("gone"); ok {
		t.Error(`"gone" was answered after its caller gave up`)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if got := u.served[1]; got != "roomy" {
		t.Errorf("served %q next, want roomy", got)
	}
}

// A call handed straight to an idle worker starts no standing line: a
// burst that finds the workers busy later waits as its deadlines allow.
func TestWorkersHandoffsMakeNoLine(t *testing.T) {
	u := newWorkersUnderTest(2, 50*time.Millisecond)
	defer func() { u.close(); close(u.release); u.wait() }()
	u.call("busy-1", 2*time.Second)
	u.call("busy-2", 2*time.Second)
	eventually(t, "both workers serve", func() bool { return u.servedCount() == 2 })
	u.release <- struct{}{} // one worker goes idle
	eventually(t, "a worker is idle", func() bool {
		u.workers.mu.Lock()
		defer u.workers.mu.Unlock()
		return u.idle == 1
	})
	u.call("handed", 2*time.Second) // to the idle worker, through the line
	u.advance(standingAfter + time.Millisecond)
	eventually(t, "the handed call is served", func() bool { return u.servedCount() == 3 })
	for i := range 6 {
		u.call("burst-"+string(rune('a'+i)), 2*time.Second)
	}
	for i := range 6 {
		if why, ok := u.refusal("burst-" + string(rune('a'+i))); ok {
			t.Fatalf("a burst after a handoff: call %d refused (%q), want it waiting", i, why)
		}
	}
}

// However calls arrive, no more than max are served at once.
func TestWorkersBoundConcurrency(t *testing.T) {
	var in, most atomic.Int32
	w := newWorkers(4, func(*envelope.Request) {
		n := in.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(time.Millisecond)
		in.Add(-1)
	}, func(*envelope.Request, string) {})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				w.dispatch(context.Background(), &envelope.Request{Deadline: time.Now().Add(time.Second).UnixNano()})
			}
		})
	}
	wg.Wait()
	w.close()
	w.wait()
	if m := most.Load(); m > 4 {
		t.Fatalf("%d calls served at once, want at most 4", m)
	}
}

// Calls handed to idle workers sit in the line until their workers wake,
// so a steady stream of handoffs may never leave the line empty; they
// make no standing line. Two handoffs not yet taken for longer than
// standingAfter, and a third call that finds every worker spoken for: it
// waits, as its deadline allows (counting every call in the line would
// refuse it as overload).
func TestWorkersHandoffsInLineAreNoStandingLine(t *testing.T) {
	w := newWorkers(2, func(*envelope.Request) {}, func(*envelope.Request, string) {})
	t0 := time.Unix(1000, 0)
	w.cost.observe(50 * time.Millisecond)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.started, w.idle = 2, 2 // both workers signalled, neither awake yet
	w.enqueue(waitingCall{req: &envelope.Request{}, since: t0, handoff: true})
	w.enqueue(waitingCall{req: &envelope.Request{}, since: t0, handoff: true})
	now := t0.Add(standingAfter + time.Millisecond)
	if why := w.admit(&envelope.Request{Deadline: now.Add(2 * time.Second).UnixNano()}, now); why != "" {
		t.Fatalf("a call behind two handoffs refused: %q; want it waiting", why)
	}
	// The same line made of calls that waited is a standing line.
	w.waiting = w.waiting[:0]
	w.queued = 0
	w.enqueue(waitingCall{req: &envelope.Request{}, since: t0})
	w.enqueue(waitingCall{req: &envelope.Request{}, since: t0})
	if why := w.admit(&envelope.Request{Deadline: now.Add(2 * time.Second).UnixNano()}, now); why == "" {
		t.Fatal("a call behind a line standing for over standingAfter admitted; want it refused")
	}
}

// The first measured call is reported once (the adapter then announces its
// service time at once, as callers size what they send from it).
func TestWorkersReportFirstMeasurement(t *testing.T) {
	var told atomic.Int32
	w := newWorkers(2, func(*envelope.Request) {}, func(*envelope.Request, string) {})
	w.measured = func() { told.Add(1) }
	for range 5 {
		w.dispatch(context.Background(), &envelope.Request{})
	}
	w.close()
	w.wait()
	if n := told.Load(); n != 1 {
		t.Fatalf("told of the first measurement %d times, want 1", n)
	}
	if w.cost.get() <= 0 {
		t.Fatalf("service time %v after calls, want above 0", w.cost.get())
	}
}

// TestWorkersClosedRefuse: a call dispatched after the workers closed (a
// delivery a broker had on its way when the instance left its subjects)
// is answered at once as shutting down, unless its deadline has passed.
func TestWorkersClosedRefuse(t *testing.T) {
	u := newWorkersUnderTest(2, 10*time.Millisecond)
	u.close()
	u.call("late", time.Second)
	u.call("expired", -time.Second)
	if why, ok := u.refusal("late"); !ok || why != shedDetail {
		t.Errorf("a call after close: refused %v (%q), want %q", ok, why, shedDetail)
	}
	if _, ok := u.refusal("expired"); ok {
		t.Error("a call past its deadline was answered")
	}
	if n := u.servedCount(); n != 0 {
		t.Errorf("%d calls served after close", n)
	}
}
