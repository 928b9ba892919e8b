package stream

import "sync/atomic"

// Budget bounds, across all of a sidecar's receiving streams, the credit
// granted and not yet consumed: what senders may still send plus what is
// buffered unread. Each stream is offered its full DefaultWindow while the
// sidecar is under its budget; past it, new streams are offered
// MinWindow, and credit a reader frees is granted back only as far as
// keeping MinWindow in flight, so a stalled reader holds at most its
// window and fifty of them cannot exhaust the sidecar, while every stream
// still moves. The bound is soft by the calls that start at the same
// moment. A nil *Budget bounds nothing.
type Budget struct {
	max  int64
	used atomic.Int64
}

// DefaultBudget is a sidecar's budget of stream credit.
const DefaultBudget = 8 << 20

// MinWindow is the credit a stream keeps in flight whatever the budget.
const MinWindow = 32 << 10

// NewBudget returns a Budget of max bytes.
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used returns the credit granted and not consumed now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Offer returns the window to offer a new stream: DefaultWindow while it
// fits the budget, else MinWindow. The Inbound made with it charges it.
func (b *Budget) Offer() int64 {
	if b == nil || b.used.Load()+DefaultWindow <= b.max {
		return DefaultWindow
	}
	return MinWindow
}

// grant returns how much of want a stream that holds held credit may be
// granted, and charges it: all of it within the budget, else enough to
// bring the stream back to MinWindow.
func (b *Budget) grant(want, held int64) int64 {
	if b == nil {
		return want
	}
	if b.used.Load()+want <= b.max {
		b.used.Add(want)
		return want
	}
	g := min(want, max(0, MinWindow-held))
	b.used.Add(g)
	return g
}

// Charge counts n more bytes held: a new stream's window, or the body in a
// streaming answer's head, which its window bounds and which is held as
// long as the stream is (Free it after).
func (b *Budget) Charge(n int64) {
	if b != nil {
		b.used.Add(n)
	}
}

// Free returns n bytes to the budget.
func (b *Budget) Free(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}
