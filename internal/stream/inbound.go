package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/busmesh/busmesh/internal/envelope"
)

// ErrFlowControl is the error of a stream whose sender ignored the window
// or sent a frame twice; the stream is abandoned, as HTTP/2 does.
var ErrFlowControl = errors.New("stream flow-control violation")

// Chunk is the data of one frame.
type Chunk struct {
	Data []byte
}

// Inbound is the receiving side of one direction of a stream: it puts
// frames back in order, buffers what the consumer has not read (bounded by
// the window it granted) and says when to grant more credit. Push is called
// by the inbox dispatcher and never blocks; Next by the consumer.
type Inbound struct {
	window int64
	budget *Budget // nil: not bounded beyond the window

	held int64 // credit granted and not consumed, charged to budget (under mu)

	mu       sync.Mutex
	next     uint32 // seq of the frame Next returns next
	ready    []queued
	early    map[uint32]queued // frames that arrived ahead of next
	buffered int64             // credit held by ready and early
	unacked  int64             // credit consumed but not yet granted back
	trailers []string
	err      error // set once: io.EOF after the end frame, or why the stream failed
	signal   chan struct{}
}

type queued struct {
	chunk    Chunk
	end      bool
	trailers []string
}

// NewInbound returns an Inbound that granted the sender window bytes.
func NewInbound(window int64) *Inbound {
	return &Inbound{window: window, next: 1, signal: make(chan struct{}, 1)}
}

// NewBudgetedInbound returns an Inbound that granted the sender window
// bytes (from b.Offer) and grants more only as b allows; its owner must
// Release it when the call ends.
func NewBudgetedInbound(window int64, b *Budget) *Inbound {
	q := NewInbound(window)
	q.budget, q.held = b, window
	b.Charge(window)
	return q
}

// Release returns the stream's credit to its budget: the call ended,
// whatever was left unread.
func (q *Inbound) Release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.releaseLocked()
}

func (q *Inbound) releaseLocked() {
	q.budget.Free(q.held)
	q.held = 0
	q.budget = nil
}

// Push queues a data or end frame (Seq > 0). f's slices must stay valid: the
// frame's message buffer belongs to the stream from now on.
func (q *Inbound) Push(f *envelope.Frame) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil || f.Seq < q.next {
		return // ended or failed stream, or a duplicate
	}
	item := queued{chunk: Chunk{Data: f.Data}, end: f.End, trailers: f.Trailers}
	cost := Cost(len(f.Data))
	if q.buffered+cost > 2*q.window+Cost(0) && len(q.ready)+len(q.early) > 0 {
		q.failLocked(fmt.Errorf("%w: %d bytes buffered, window %d", ErrFlowControl, q.buffered+cost, q.window))
		return
	}
	q.buffered += cost
	if f.Seq == q.next+uint32(len(q.ready)) {
		q.ready = append(q.ready, item)
		// Frames that arrived early may now be in order.
		for {
			n := q.next + uint32(len(q.ready))
			e, ok := q.early[n]
			if !ok {
				break
			}
			delete(q.early, n)
			q.ready = append(q.ready, e)
		}
	} else {
		if q.early == nil {
			q.early = map[uint32]queued{}
		}
		if _, dup := q.early[f.Seq]; dup {
			q.buffered -= cost
			return
		}
		q.early[f.Seq] = item
	}
	q.notify()
}

// Fail ends the stream with err, dropping what is queued: Next returns err
// from now on. For a cancel from the peer, or a local timeout.
func (q *Inbound) Fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.failLocked(err)
}

func (q *Inbound) failLocked(err error) {
	if q.err == nil {
		q.err = err
		q.ready, q.early = nil, nil
		q.releaseLocked()
		q.notify()
	}
}

func (q *Inbound) notify() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// BreakOff ends the stream with err after the frames queued in order: the
// sender's own source broke off (its application reset the connection)
// after sending them, and the reader is owed them, as a TCP reader gets
// the bytes that came before a reset: a WebSocket's close frame, a gRPC
// server's last messages. Frames that arrived after a gap are dropped.
func (q *Inbound) BreakOff(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	if len(q.ready) == 0 {
		q.failLocked(err)
		return
	}
	for _, e := range q.early {
		q.buffered -= Cost(len(e.chunk.Data))
	}
	q.early = nil
	q.err = err // Next returns it once ready is read
	q.notify()
}

// Next returns the next chunk, waiting for it. After the end frame it
// returns io.EOF (see Trailers). grant is credit the caller should now send
// back to the sender in a window update (0 most of the time).
func (q *Inbound) Next(ctx context.Context) (c Chunk, grant int64, err error) {
	for {
		q.mu.Lock()
		if len(q.ready) > 0 {
			item := q.ready[0]
			q.ready[0] = queued{}
			q.ready = q.ready[1:]
			q.next++
			cost := Cost(len(item.chunk.Data))
			q.buffered -= cost
			q.unacked += cost
			used := min(cost, q.held)
			q.held -= used
			q.budget.Free(used)
			if item.end {
				q.trailers = item.trailers
				q.err = io.EOF
				q.unacked = 0 // nothing more to receive: no credit to return
				q.releaseLocked()
			}
			// Grant in quarters of the window: few updates, no stall. Past
			// the sidecar's budget, only enough to keep MinWindow in
			// flight; the rest waits for a later read.
			if q.unacked >= q.window/4 && q.err == nil { // no credit for a stream that broke off
				grant = q.budget.grant(q.unacked, q.held)
				q.unacked -= grant
				q.held += grant
			}
			q.mu.Unlock()
			if item.end && len(item.chunk.Data) == 0 {
				return Chunk{}, grant, io.EOF
			}
			return item.chunk, grant, nil
		}
		if q.err != nil {
			err := q.err
			if err != io.EOF {
				q.releaseLocked() // after BreakOff: nothing is left to read
			}
			q.mu.Unlock()
			return Chunk{}, 0, err
		}
		q.mu.Unlock()
		select {
		case <-q.signal:
		case <-ctx.Done():
			return Chunk{}, 0, ctx.Err()
		}
	}
}

// Trailers returns the trailers of the end frame, after Next returned
// io.EOF.
func (q *Inbound) Trailers() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.trailers
}
