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
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// errNoResponders is how a call learns that the broker returned its request.
var errNoResponders = errors.New("no responders")

// Inbox is request/reply over a Broker: it owns the ambassador's inbox
// subject and matches what arrives there to the waiting call by envelope id.
// A call is registered by open and removed by release, whatever its
// outcome, so nothing is left behind by calls that time out.
type Inbox struct {
	b       broker.Broker
	subject string
	source  string
	logger  *slog.Logger
	metrics *telemetry.Metrics
	limiter telemetry.Limiter

	nextID   atomic.Uint64
	returned func(uint64) // in.onReturn, made once so publishing does not allocate it

	mu    sync.Mutex
	calls map[uint64]*call

	sub broker.Subscription
}

// call is one request waiting for its answer. Calls are pooled: every
// delivery checks, under the call's lock, that the call still has the id
// it was looked up by, so a late answer never reaches the call's next use.
type call struct {
	// ready is signalled once: the response arrived, or the call failed.
	ready chan struct{}
	// headers is the request's header list, its capacity reused.
	headers []string

	mu       sync.Mutex
	id       uint64
	resp     envelope.Response
	answered bool
	err      error
	inbound  *stream.Inbound // response frames, made on first need
	window   *stream.Window  // credit for request frames, once accepted
	accepted chan struct{}   // closed when the adapter names its inbox
	peer     string          // the serving adapter's inbox
}

var callPool = sync.Pool{New: func() any { return &call{ready: make(chan struct{}, 1)} }}

// newInbox subscribes to the sidecar's inbox subject.
func newInbox(ctx context.Context, b broker.Broker, subject, sidecar string, logger *slog.Logger, m *telemetry.Metrics) (*Inbox, error) {
	in := &Inbox{
		b:       b,
		subject: subject,
		source:  sidecar,
		logger:  logger,
		metrics: m,
		limiter: telemetry.Limiter{Interval: time.Second},
		calls:   map[uint64]*call{},
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

// open registers a new call.
func (in *Inbox) open() *call {
	c := callPool.Get().(*call)
	id := in.nextID.Add(1)
	c.mu.Lock()
	c.id = id
	c.mu.Unlock()
	in.mu.Lock()
	in.calls[id] = c
	in.mu.Unlock()
	return c
}

// release forgets a call: what arrives for it later is counted as
// unmatched. The caller must be done with c and everything it handed out.
func (in *Inbox) release(c *call) {
	c.mu.Lock()
	id := c.id
	c.id = 0 // from now on deliveries for id miss
	// Keep the lists' capacity, not what they point to: a pooled call must
	// not hold an old message's memory.
	resp := c.resp
	clear(resp.Headers[:cap(resp.Headers)])
	clear(resp.Trailers[:cap(resp.Trailers)])
	clear(c.headers[:cap(c.headers)])
	c.resp = envelope.Response{Headers: resp.Headers[:0], Trailers: resp.Trailers[:0]}
	c.answered, c.err, c.inbound, c.window, c.accepted, c.peer = false, nil, nil, nil, nil, ""
	c.mu.Unlock()
	in.mu.Lock()
	delete(in.calls, id)
	in.mu.Unlock()
	select {
	case <-c.ready:
	default:
	}
	if cap(c.headers) <= 256 {
		callPool.Put(c)
	}
}

func (in *Inbox) lookup(id uint64) *call {
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

// publish sends a call's request; on a Returner backend a request nobody
// is subscribed to fails the call at once.
func (in *Inbox) publish(ctx context.Context, subject string, c *call, data []byte) error {
	if r, ok := in.b.(broker.Returner); ok {
		return r.PublishReturnable(ctx, subject, data, c.id, in.returned)
	}
	return in.b.Publish(ctx, subject, data)
}

func (in *Inbox) onReturn(id uint64) {
	if c := in.lookup(id); c != nil {
		c.fail(id, errNoResponders)
	}
}

// handle dispatches one message from the inbox. It never blocks: a call's
// frames queue in its stream.Inbound, bounded by the window it granted.
func (in *Inbox) handle(_ context.Context, data []byte) {
	kind, msg, err := envelope.Unwrap(data)
	if err != nil {
		in.reject("malformed", len(data), err)
		return
	}
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
		if c := in.lookup(id); c != nil {
			if err := c.answer(id, msg); err != nil {
				in.reject("malformed", len(data), err)
			}
		}
	case envelope.KindFrame:
		var f envelope.Frame
		if err := f.Unmarshal(msg); err != nil {
			in.reject("malformed", len(data), err)
			return
		}
		if c := in.lookup(f.ID); c != nil {
			c.frame(&f)
		}
	default:
		in.reject("unexpected-kind", len(data), errors.New("a "+kind.String()+" on an inbox"))
	}
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

// answer decodes the response of call id into c, reusing its header
// capacity, and wakes the caller.
func (c *call) answer(id uint64, msg []byte) error {
	c.mu.Lock()
	if c.id != id || c.answered || c.err != nil {
		c.mu.Unlock()
		return nil
	}
	if err := c.resp.Unmarshal(msg); err != nil || c.resp.ID != id {
		c.mu.Unlock()
		if err == nil {
			err = errors.New("response id differs from its envelope's")
		}
		return err
	}
	c.answered = true
	r := &c.resp
	if r.ReplyTo != "" {
		c.acceptLocked(r.ReplyTo, int64(r.Window))
	}
	if r.More && c.inbound == nil {
		c.inbound = stream.NewInbound(stream.DefaultWindow)
	}
	c.mu.Unlock()
	c.signal()
	return nil
}

// frame handles a frame from the serving adapter.
func (c *call) frame(f *envelope.Frame) {
	c.mu.Lock()
	if c.id != f.ID {
		c.mu.Unlock()
		return
	}
	if f.ReplyTo != "" {
		c.acceptLocked(f.ReplyTo, int64(f.WindowUpdate))
	} else if f.WindowUpdate > 0 && c.window != nil {
		c.window.Grant(int64(f.WindowUpdate))
	}
	if f.Cancel {
		err := errors.New("cancelled by the adapter: " + f.Error)
		if c.inbound != nil {
			c.inbound.Fail(err)
		}
		if c.window != nil {
			c.window.Close(err)
		}
		c.mu.Unlock()
		c.fail(f.ID, err)
		return
	}
	if f.Seq > 0 {
		if c.inbound == nil {
			c.inbound = stream.NewInbound(stream.DefaultWindow)
		}
		c.inbound.Push(f)
	}
	c.mu.Unlock()
}

// acceptLocked records the adapter's inbox and initial window, once.
func (c *call) acceptLocked(peer string, window int64) {
	if c.peer != "" {
		return
	}
	c.peer = peer
	c.window = stream.NewWindow(window)
	if c.accepted != nil {
		close(c.accepted)
	}
}

// fail ends call id, if it has no answer yet.
func (c *call) fail(id uint64, err error) {
	c.mu.Lock()
	if c.id != id || c.answered || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	c.mu.Unlock()
	c.signal()
}

// clearFailure forgets a failure, to send the call again.
func (c *call) clearFailure() {
	c.mu.Lock()
	c.err = nil
	c.mu.Unlock()
	select {
	case <-c.ready:
	default:
	}
}

func (c *call) signal() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}
