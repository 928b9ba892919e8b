package adapter

import (
	"context"

	"github.com/busmesh/busmesh/internal/envelope"
)

// dispatch hands a call to an idle worker, or starts one while under the
// limit, or else waits for a worker to be free (or ctx to end).
func (w *workers) dispatch(ctx context.Context, req *envelope.Request) {
	select {
	case w.jobs <- req:
		return
	default:
	}
	if n := w.started.Load(); int(n) < w.max && w.started.CompareAndSwap(n, n+1) {
		w.running.Add(1)
		go w.work(req)
		return
	}
	select {
	case w.jobs <- req:
	case <-ctx.Done():
	}
}

// work serves calls until the pool closes.
func (w *workers) work(req *envelope.Request) {
	defer w.running.Done()
	for ok := true; ok; req, ok = <-w.jobs {
		w.busy.Add(1)
		w.serve(req)
		w.busy.Add(-1)
	}
}

// close tells the workers that no call comes any more: each ends with its
// last one. wait waits for them.
func (w *workers) close() { close(w.jobs) }

func (w *workers) wait() { w.running.Wait() }

// busyNow is the number of calls being served.
func (w *workers) busyNow() int { return int(w.busy.Load()) }
