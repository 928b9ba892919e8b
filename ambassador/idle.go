package ambassador

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/internal/reason"
)

// idleWatch ends a call when no byte has moved in either direction for its
// route's idle timeout: a stalled stream, long poll or WebSocket whose
// deadline is long or none does not hold the sidecars forever. The call's
// context is cancelled with a timeout *reason.Error as its cause. Listeners
// call touch as bytes move; a nil *idleWatch does nothing.
type idleWatch struct {
	d      atomic.Int64 // the timeout in nanoseconds; 0 when off
	head   atomic.Bool  // waiting for the answer's head (a call without a deadline)
	last   atomic.Int64 // unix nanoseconds of the last activity
	timer  *time.Timer
	cancel context.CancelCauseFunc
}

// watchIdle returns ctx, ended after d without activity, and its watch.
func watchIdle(ctx context.Context, d time.Duration) (context.Context, *idleWatch) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &idleWatch{cancel: cancel}
	w.d.Store(int64(d))
	w.touch()
	t := time.AfterFunc(time.Hour, w.check)
	t.Stop()
	w.timer = t
	t.Reset(d)
	return ctx, w
}

// check runs when the timer fires: it ends the call, or waits again for
// what is left of the timeout since the last activity.
func (w *idleWatch) check() {
	d := time.Duration(w.d.Load())
	if d <= 0 {
		return
	}
	since := time.Duration(time.Now().UnixNano() - w.last.Load())
	if since < d {
		w.timer.Reset(d - since)
		return
	}
	if w.head.Load() {
		w.cancel(reason.Errorf(reason.Timeout, "no answer within %v", d))
		return
	}
	w.cancel(reason.Errorf(reason.Timeout, "no byte moved for %v (idle_timeout)", d))
}

// touch records activity.
func (w *idleWatch) touch() {
	if w != nil {
		w.last.Store(time.Now().UnixNano())
	}
}

// set changes the timeout to d from now (0 turns it off); head says the
// call still waits for its answer's head.
func (w *idleWatch) set(d time.Duration, head bool) {
	w.head.Store(head)
	w.d.Store(int64(d))
	w.touch()
	if d <= 0 {
		w.timer.Stop()
		return
	}
	w.timer.Reset(d)
}

// stop releases the watch.
func (w *idleWatch) stop() {
	if w != nil {
		w.timer.Stop()
		w.cancel(nil)
	}
}
