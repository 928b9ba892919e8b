package stream

import (
	"context"
	"sync"
)

// FrameCost is what a frame costs in flow-control credit beyond its data,
// so that a stream of tiny messages is bounded too, not only a stream of
// large ones.
const FrameCost = 64

// Cost returns the credit a frame with n bytes of data takes.
func Cost(n int) int64 { return int64(n) + FrameCost }

// Window is the sender's side of flow control: credit, in bytes, that the
// receiver has granted. Safe for concurrent use.
type Window struct {
	size   int64 // the initial credit: the receiver's window
	mu     sync.Mutex
	avail  int64
	err    error
	signal chan struct{} // non-nil while a Take waits
}

// NewWindow returns a Window with initial credit.
func NewWindow(initial int64) *Window { return &Window{size: initial, avail: initial} }

// minTake is the least credit a sender waits for before it sends part of
// a frame: no frames of a few bytes when the receiver grants in dribs.
const minTake = FrameCost + 4<<10

// TakeUpTo waits until credit is available, then takes up to n of it and
// returns how much it took: n, or what the receiver granted when that is
// less (at least the cost of a small frame, or n, or the whole window, if
// smaller). The
// balance never goes negative, as in HTTP/2: a frame larger than the
// credit is sent in parts. It returns ctx's error, or the error given to
// Close.
func (w *Window) TakeUpTo(ctx context.Context, n int64) (int64, error) {
	need := max(1, min(n, minTake, w.size))
	w.mu.Lock()
	for w.avail < need && w.err == nil {
		if w.signal == nil {
			w.signal = make(chan struct{})
		}
		ch := w.signal
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	got := min(n, w.avail)
	w.avail -= got
	return got, nil
}

// Grant adds credit from a window update.
func (w *Window) Grant(n int64) {
	w.mu.Lock()
	w.avail += n
	w.wake()
	w.mu.Unlock()
}

// Close fails current and later Takes with err.
func (w *Window) Close(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.wake()
	w.mu.Unlock()
}

func (w *Window) wake() {
	if w.signal != nil {
		close(w.signal)
		w.signal = nil
	}
}
