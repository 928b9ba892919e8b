package ambassador

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// errNoResponders is how a call learns that the broker returned its request.
var errNoResponders = errors.New("no responders")

// Inbox is request/reply over a Broker: it owns the ambassador's inbox
// subject and matches what arrives there to the waiting call by envelope id.
// A call is registered by register and removed by release, whatever its
// outcome, so nothing is left behind by calls that time out.
type Inbox struct {
	b       broker.Broker
	pub     *bus.Publisher
	source  string // the sidecar's id, on the frames it sends
	subject string
	logger  *slog.Logger
	metrics *telemetry.Metrics
	limiter telemetry.Limiter

	nextID   atomic.Uint64
	returned func(uint64) // in.onReturn, made once so publishing does not allocate it

	mu    sync.Mutex
	calls map[uint64]*pending

	sub broker.Subscription

	guard *secure.Guard // nil: security off

	budget *stream.Budget // the credit of every answer streaming in
}

// pending is a call's side of the inbox: what has arrived for it. Calls
// are pooled: every delivery checks, under the lock, that the call still
// has the id it was looked up by, so a late answer never reaches the
// call's next use. Its state changes only through its methods.
type pending struct {
	// ready is signalled once: the response arrived, or the call failed.
	ready chan struct{}

	mu       sync.Mutex
	id       uint64
	resp     envelope.Response
	answered bool
	err      error
	inbound  *stream.Inbound // response frames, made on first need
	window   *stream.Window  // credit for request frames, once accepted
	accepted chan struct{}   // closed when the adapter names its inbox
	peer     string          // the serving adapter's inbox
	service  string          // the service called: with security on, only its certificate answers
	via      *bus.Publisher  // the broker it went over: its answer comes back over that one only
	offered  int64           // the window its request offered for answer frames
	budget   *stream.Budget  // the sidecar's, which that window is charged to
	headHeld int64           // a streaming answer's head body, charged to budget
}

// newInbox subscribes to the sidecar's inbox subject.
func newInbox(ctx context.Context, pub *bus.Publisher, subject, source string, logger *slog.Logger, m *telemetry.Metrics, guard *secure.Guard) (*Inbox, error) {
	b := pub.Broker()
	in := &Inbox{
		b:       b,
		pub:     pub,
		source:  source,
		subject: subject,
		logger:  logger,
		metrics: m,
		limiter: telemetry.Limiter{Interval: time.Second},
		calls:   map[uint64]*pending{},
		guard:   guard,
		budget:  stream.NewBudget(stream.DefaultBudget),
	}
	// Ids start at a random point so that a restarted sidecar, which keeps
	// its inbox, does not take its predecessor's late replies for its own.
	in.nextID.Store(rand.Uint64() >> 1)
	in.returned = in.onReturn
	sub, err := b.Subscribe(ctx, in.subject, in.handle)
	if err != nil {
		return nil, err
	}
	in.sub = sub
	return in, nil
}

// register gives p a new id and registers it for what arrives.
func (in *Inbox) register(p *pending, service string, via *bus.Publisher) uint64 {
	id := in.nextID.Add(1)
	p.mu.Lock()
	p.id, p.service, p.via = id, service, via
	p.offered, p.budget = in.budget.Offer(), in.budget
	p.mu.Unlock()
	in.mu.Lock()
	in.calls[id] = p
	in.mu.Unlock()
	return id
}

// release forgets p and clears its answer: what arrives for it later is
// counted as unmatched. The caller must be done with p and everything it
// handed out.
func (in *Inbox) release(p *pending) {
	in.detach(p)
	p.clear()
}

// detach stops deliveries to p: from its return nothing writes p's answer,
// so the call's end can read it without a lock. An answer that was not
// accepted (a late or rejected message half decoded) is cleared, so that
// nothing reports what a stranger claimed.
func (in *Inbox) detach(p *pending) {
	p.mu.Lock()
	id := p.id
	p.id = 0 // from now on deliveries for id miss
	if !p.answered {
		p.clearResponseLocked()
	}
	p.mu.Unlock()
	if id == 0 {
		return
	}
	in.mu.Lock()
	delete(in.calls, id)
	in.mu.Unlock()
	select {
	case <-p.ready:
	default:
	}
}

// clear resets a detached p for its next call.
func (p *pending) clear() {
	p.mu.Lock()
	p.clearResponseLocked()
	if p.inbound != nil {
		p.inbound.Release() // unread answer's credit back to the budget
	}
	p.budget.Free(p.headHeld)
	p.headHeld = 0
	p.answered, p.err, p.inbound, p.window, p.accepted, p.peer = false, nil, nil, nil, nil, ""
	p.mu.Unlock()
}

// clearResponseLocked keeps the lists' capacity, not what they point to: a
// pooled call must not hold an old message's memory.
func (p *pending) clearResponseLocked() {
	resp := p.resp
	clear(resp.Headers[:cap(resp.Headers)])
	clear(resp.Trailers[:cap(resp.Trailers)])
	p.resp = envelope.Response{Headers: resp.Headers[:0], Trailers: resp.Trailers[:0]}
}

func (in *Inbox) lookup(id uint64) *pending {
	in.mu.Lock()
	c := in.calls[id]
	in.mu.Unlock()
	if c == nil {
		in.metrics.RepliesUnmatched.Inc()
	}
	return c
}

// pending returns the number of registered calls.
func (in *Inbox) pending() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.calls)
}

func (in *Inbox) onReturn(id uint64) {
	if p := in.lookup(id); p != nil {
		p.fail(id, errNoResponders)
	}
}

// handle dispatches one message from the inbox on the sidecar's own
// broker. It never blocks: a call's frames queue in its stream.Inbound,
// bounded by the window it granted.
func (in *Inbox) handle(_ context.Context, data []byte) { in.dispatch(in.pub, data) }

// handlerOn is handle for the inbox's subscription on another broker
// (calls split over brokers): the same calls table, and pongs go back
// over pub, that broker's publisher.
func (in *Inbox) handlerOn(pub *bus.Publisher) func(context.Context, []byte) {
	return func(_ context.Context, data []byte) { in.dispatch(pub, data) }
}

func (in *Inbox) dispatch(pub *bus.Publisher, data []byte) {
	e, from, ok := in.open(data)
	if !ok {
		return
	}
	kind, msg := e.Kind, e.Msg
	switch kind {
	case envelope.KindResponse:
		id, ok := envelope.PeekID(msg)
		if !ok {
			// Not written by a busmesh encoder: decode to find the id.
			var r envelope.Response
			if err := r.Unmarshal(msg); err != nil {
				in.reject("malformed", len(data), err)
				return
			}
			id = r.ID
		}
		if p := in.lookup(id); p != nil && in.believe(p, pub, &e, from, len(data)) {
			if err := p.answer(id, msg); err != nil {
				in.reject("malformed", len(data), err)
			}
		}
	case envelope.KindFrame:
		var f envelope.Frame
		if err := f.Unmarshal(msg); err != nil {
			in.reject("malformed", len(data), err)
			return
		}
		if f.Ping {
			in.bind(&e, from)
			in.answerPing(pub, &f)
			return
		}
		if p := in.lookup(f.ID); p != nil && in.believe(p, pub, &e, from, len(data)) {
			p.frame(&f)
		}
	default:
		in.reject("unexpected-kind", len(data), errors.New("a "+kind.String()+" on an inbox"))
	}
}

// believe reports whether an answer or frame for p may be believed. It
// must come over the broker p went over (pub is that broker's publisher):
// another broker's copy — a mirror broker, or two brokers bridged — is
// dropped and counted, as it would be a second delivery, or a stranger's.
// And with security on it must come from the service p called (sentBy).
// One lock of p reads both.
func (in *Inbox) believe(p *pending, pub *bus.Publisher, e *envelope.Envelope, from secure.Sender, size int) bool {
	p.mu.Lock()
	via, service := p.via, p.service
	p.mu.Unlock()
	if via != nil && via != pub {
		in.reject("wrong-broker", size, errors.New("an answer for a call over another broker"))
		return false
	}
	return in.sentBy(service, e, from, size)
}

// answerPing answers a serving adapter's liveness ping: pong while the
// call is still waited for, cancel when it is not (it ended, and its
// cancel was lost, or this sidecar restarted).
func (in *Inbox) answerPing(pub *bus.Publisher, f *envelope.Frame) {
	if f.ReplyTo == "" {
		return
	}
	in.mu.Lock()
	p, waiting := in.calls[f.ID]
	in.mu.Unlock()
	service := ""
	if waiting {
		p.mu.Lock()
		service = p.service
		p.mu.Unlock()
	}
	answer := envelope.Frame{ID: f.ID, Source: in.source, Pong: waiting, Cancel: !waiting}
	if !waiting {
		answer.Error = "the caller no longer waits for this call"
	}
	peer := f.ReplyTo
	// Not on the delivery goroutine: a publish may block, and the inbox's
	// handler must not.
	go func() {
		ctx := context.Background()
		if service != "" && in.guard != nil {
			ctx = secure.ForPeer(ctx, &service) // sealed for the service called, the ping's sender
		}
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := pub.Publish(ctx, peer, &answer); err != nil {
			in.logger.Debug("pong not sent", telemetry.KeySubject, peer, telemetry.KeyErr, err)
		}
	}()
}

func (in *Inbox) reject(reason string, size int, err error) {
	in.metrics.EnvelopesRejected.WithLabelValues("ambassador", reason).Inc()
	if ok, suppressed := in.limiter.Allow(); ok {
		in.logger.Warn("envelope rejected", telemetry.KeySubject, in.subject, telemetry.KeyReason, reason,
			telemetry.KeyBytes, size, telemetry.KeyErr, err, "suppressed", suppressed)
	}
}

// close unsubscribes the inbox; calls still waiting fail at their deadline.
func (in *Inbox) close() error { return in.sub.Unsubscribe() }

// answer decodes the response of call id into p, reusing its header
// capacity, and wakes the caller.
func (p *pending) answer(id uint64, msg []byte) error {
	p.mu.Lock()
	if p.id != id || p.answered || p.err != nil {
		p.mu.Unlock()
		return nil
	}
	if err := p.resp.Unmarshal(msg); err != nil || p.resp.ID != id {
		p.mu.Unlock()
		if err == nil {
			err = errors.New("response id differs from its envelope's")
		}
		return err
	}
	p.answered = true
	r := &p.resp
	if r.ReplyTo != "" {
		p.acceptLocked(r.ReplyTo, int64(r.Window))
	}
	if r.More {
		// Held while the stream lasts: counted, so later calls are offered
		// less.
		p.headHeld = int64(len(r.Body))
		p.budget.Charge(p.headHeld)
		if p.inbound == nil {
			p.inbound = stream.NewBudgetedInbound(p.offered, p.budget)
		}
	}
	p.mu.Unlock()
	p.signal()
	return nil
}

// frame handles a frame from the serving adapter.
func (p *pending) frame(f *envelope.Frame) {
	p.mu.Lock()
	if p.id != f.ID {
		p.mu.Unlock()
		return
	}
	if f.ReplyTo != "" {
		p.acceptLocked(f.ReplyTo, int64(f.WindowUpdate))
	} else if f.WindowUpdate > 0 && p.window != nil {
		p.window.Grant(int64(f.WindowUpdate))
	}
	if f.Cancel {
		// The adapter names its reason (response-too-large, app-unreachable).
		err := &reason.Error{Reason: reason.Parse(f.Error), Detail: "cancelled by the adapter: " + f.Error}
		if err.Reason == reason.None || err.Reason == reason.Unknown {
			err.Reason = reason.StreamFailed
		}
		if p.inbound != nil {
			p.inbound.BreakOff(err) // what the adapter sent before its cancel is still passed on
		}
		if p.window != nil {
			p.window.Close(err)
		}
		p.mu.Unlock()
		p.fail(f.ID, err)
		return
	}
	if f.Seq > 0 {
		if p.inbound == nil {
			p.inbound = stream.NewBudgetedInbound(p.offered, p.budget)
		}
		p.inbound.Push(f)
	}
	p.mu.Unlock()
}

// acceptLocked records the adapter's inbox and initial window, once.
func (p *pending) acceptLocked(peer string, window int64) {
	if p.peer != "" {
		return
	}
	p.peer = peer
	p.window = stream.NewWindow(window)
	if p.accepted != nil {
		close(p.accepted)
	}
}

// fail ends call id, if it has no answer yet.
func (p *pending) fail(id uint64, err error) {
	p.mu.Lock()
	if p.id != id || p.answered || p.err != nil {
		p.mu.Unlock()
		return
	}
	p.err = err
	p.mu.Unlock()
	p.signal()
}

// clearFailure forgets a failure, to send the call again.
func (p *pending) clearFailure() {
	p.mu.Lock()
	p.err = nil
	p.mu.Unlock()
	select {
	case <-p.ready:
	default:
	}
}

func (p *pending) signal() {
	select {
	case p.ready <- struct{}{}:
	default:
	}
}

// expectAccept prepares p for a request that streams: its further frames
// wait until the adapter accepts the call.
func (p *pending) expectAccept() {
	p.mu.Lock()
	p.accepted = make(chan struct{})
	p.mu.Unlock()
}

// result returns whether p has its answer, or the failure that ended it.
func (p *pending) result() (answered bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answered, p.err
}

// frames returns the response frames' queue and the serving adapter's
// inbox.
func (p *pending) frames() (*stream.Inbound, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inbound, p.peer
}

// peerInbox returns the serving adapter's inbox, "" until it is known.
func (p *pending) peerInbox() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peer
}

// waitAccepted waits until the adapter has accepted a streaming call, and
// returns its inbox and the window it granted.
func (p *pending) waitAccepted(ctx context.Context) (string, *stream.Window, error) {
	p.mu.Lock()
	accepted := p.accepted
	p.mu.Unlock()
	select {
	case <-accepted:
	case <-ctx.Done():
		return "", nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peer, p.window, nil
}
