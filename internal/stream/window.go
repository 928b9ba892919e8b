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
	mu     sync.Mutex
	avail  int64
	err    error
	signal chan struct{} // non-nil while a Take waits
}

// NewWindow returns a Window with initial credit.
func NewWindow(initial int64) *Window { return &Window{avail: initial} }

// Take waits until some credit is available, then takes n (the balance may
// go negative, so a message larger than the window still goes through, one
// at a time). It returns ctx's error, or the error given to Close.
func (w *Window) Take(ctx context.Context, n int64) error {
	w.mu.Lock()
	for w.avail <= 0 && w.err == nil {
		if w.signal == nil {
			w.signal = make(chan struct{})
		}
		ch := w.signal
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
	}
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	w.avail -= n
	return nil
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
