package ambassador

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

const (
	// mirrorQueue is how many copies may wait for one broker; more are
	// dropped (and counted): a stalled broker must not grow memory.
	mirrorQueue = 256
	// mirrorPublishTimeout bounds one copy's publish.
	mirrorPublishTimeout = 5 * time.Second
	// mirrorFlush is how long Shutdown lets queued copies go out.
	mirrorFlush = time.Second

	// maxMirrorCalls bounds the copies one broker's mirror keeps track of
	// until their answers end (a few dozen bytes each: nothing of an
	// answer is kept); past it copies are dropped as queue_full, as the
	// shadow is not keeping up.
	maxMirrorCalls = 4096
	// mirrorWindow is the credit a copy offers for its answer's frames:
	// they are dropped on arrival and granted again at once, so it bounds
	// only what is on the broker.
	mirrorWindow = stream.DefaultWindow
	// mirrorLinger is how long past its deadline a copy is kept, for the
	// shadow adapter's timeout answer to be matched and counted.
	mirrorLinger = 2 * time.Second
	// mirrorSilence is how long a copy without a deadline is kept with no
	// word from its shadow: a serving adapter pings a quiet caller every
	// few seconds, so one that says nothing this long is gone.
	mirrorSilence = 30 * time.Second
	// mirrorSweep is how often copies past their time are forgotten.
	mirrorSweep = time.Second
	// mirrorControlTimeout bounds one grant, pong or cancel's publish.
	mirrorControlTimeout = time.Second
)

// mirrorCopy is an encoded copy of a request, waiting to be published.
// id, when not 0, is tracked until its answer ends (mirrorCall), and
// deadline is the copy's (zero: none).
type mirrorCopy struct {
	subject, service, version string
	data                      []byte
	id                        uint64
	deadline                  time.Time
}

// mirrorCall is a copy the mirror answers for as a caller that discards
// the answer: it pongs the shadow adapter's liveness pings and grants
// credit for the answer's frames as they arrive, so the shadow serves the
// copy as it would a real call, not reaped or stalled.
type mirrorCall struct {
	service string // the service copied to: only it answers, and what goes back is sealed for it
	peer    string // the shadow adapter's inbox, once its head or a ping names it
	expires time.Time
	bounded bool  // expires is the deadline's, not a silence's
	owed    int64 // credit for dropped answer frames not granted yet
	pong    bool  // a ping to answer
	queued  bool  // its id is in control: one entry each, so control never overflows
}

// mirrorStray is a ping for a copy no longer tracked: answered with a
// cancel, as the real inbox does, so the shadow stops serving it.
type mirrorStray struct {
	id   uint64
	peer string
}

// mirrorSender publishes the mirrored copies bound for one broker, off the
// caller's path: a copy is encoded while the call is at hand and queued,
// and one goroutine seals and publishes the queue. A broker that is slow
// to take messages (a Kafka topic being created, RabbitMQ flow control, a
// shadow broker in trouble) delays copies, never callers; a full queue
// drops copies.
//
// It also answers for the copies it sent until their answers end
// (mirrorCall): another goroutine sends the shadow adapters' grants and
// pongs, and forgets copies past their time. The copies tracked are
// bounded (maxMirrorCalls), and nothing of their answers is kept.
type mirrorSender struct {
	pub     *bus.Publisher
	label   string // to_broker: primary or an ambassador.brokers name
	metrics *telemetry.Metrics
	logger  *slog.Logger
	queue   chan mirrorCopy
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	closed  sync.Once
	started atomic.Bool

	// The copies sent and not yet answered in full, by id, and the ids
	// with a grant or pong to send (answerCopies sends them).
	mu      sync.Mutex
	calls   map[uint64]*mirrorCall
	control chan uint64
	strays  chan mirrorStray
	ctlDone chan struct{}
	// Set by answering, before start: the sidecar's id, on the frames the
	// mirror sends, and how a publish is sealed for the service called.
	source string
	seal   func(context.Context, *string) context.Context
}

func newMirrorSender(pub *bus.Publisher, label string, metrics *telemetry.Metrics, logger *slog.Logger) *mirrorSender {
	ctx, cancel := context.WithCancel(context.Background())
	return &mirrorSender{pub: pub, label: label, metrics: metrics, logger: logger,
		queue: make(chan mirrorCopy, mirrorQueue), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		calls: map[uint64]*mirrorCall{}, control: make(chan uint64, maxMirrorCalls),
		strays: make(chan mirrorStray, 64), ctlDone: make(chan struct{}),
		seal: func(ctx context.Context, _ *string) context.Context { return ctx }}
}

// answering sets what the frames the mirror sends to shadow adapters
// carry: the sidecar's id (the adapter finds a call by it), and seal, the
// ambassador's forPeer. It must come before start.
func (s *mirrorSender) answering(source string, seal func(context.Context, *string) context.Context) {
	s.source, s.seal = source, seal
}

// start runs the publishing goroutine and the one answering for the
// copies; close ends them.
func (s *mirrorSender) start() {
	if s.started.CompareAndSwap(false, true) {
		go s.run()
		go s.answerCopies()
	}
}

// send queues c without waiting; with the queue full, or maxMirrorCalls
// copies awaiting their answers, c is dropped.
func (s *mirrorSender) send(c mirrorCopy) {
	if c.id != 0 && !s.track(c) {
		s.metrics.MirrorDropped.WithLabelValues(c.service, s.label, "queue_full").Inc()
		return
	}
	select {
	case s.queue <- c:
	default:
		s.forget(c.id)
		s.metrics.MirrorDropped.WithLabelValues(c.service, s.label, "queue_full").Inc()
	}
}

func (s *mirrorSender) run() {
	defer close(s.done)
	for c := range s.queue {
		ctx, cancel := context.WithTimeout(s.ctx, mirrorPublishTimeout)
		err := s.pub.PublishEncoded(ctx, c.subject, c.data)
		cancel()
		if err != nil {
			s.logger.Debug("mirror not sent", telemetry.KeySubject, c.subject, telemetry.KeyBroker, s.label, telemetry.KeyErr, err)
			s.forget(c.id)
			s.metrics.MirrorDropped.WithLabelValues(c.service, s.label, "publish_failed").Inc()
			continue
		}
		s.metrics.Mirrored.WithLabelValues(c.service, c.version, s.label).Inc()
	}
}

// close lets the queued copies go out for up to mirrorFlush, then drops
// the rest, and returns once the goroutine has ended. No send may follow;
// a second close does nothing.
func (s *mirrorSender) close() { s.closed.Do(s.stop) }

func (s *mirrorSender) stop() {
	close(s.queue)
	if !s.started.Load() {
		s.cancel()
		return // no goroutine to wait for; what was queued is dropped
	}
	t := time.NewTimer(mirrorFlush)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.cancel() // publishes fail fast from here
		<-s.done
	}
	s.cancel()
	<-s.ctlDone
}

// track registers copy c before it is sent (its answer may come at once);
// false when maxMirrorCalls copies are tracked already.
func (s *mirrorSender) track(c mirrorCopy) bool {
	mc := &mirrorCall{service: c.service, expires: c.deadline, bounded: !c.deadline.IsZero()}
	if mc.bounded {
		mc.expires = mc.expires.Add(mirrorLinger)
	} else {
		mc.expires = time.Now().Add(mirrorSilence)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) >= maxMirrorCalls {
		return false
	}
	s.calls[c.id] = mc
	return true
}

// forget stops answering for copy id: its answer ended, or it was never
// sent.
func (s *mirrorSender) forget(id uint64) {
	s.mu.Lock()
	delete(s.calls, id)
	s.mu.Unlock()
}

// heard returns the service copy id went to, and whether it is tracked;
// a copy without a deadline lives on while its shadow speaks.
func (s *mirrorSender) heard(id uint64) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[id]
	if c == nil {
		return "", false
	}
	if !c.bounded {
		c.expires = time.Now().Add(mirrorSilence)
	}
	return c.service, true
}

// headed takes the head of copy id's answer: one that streams names the
// adapter to grant credit to; any other ends the copy.
func (s *mirrorSender) headed(id uint64, r *envelope.Response) {
	if !r.More || r.ReplyTo == "" {
		s.forget(id)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.calls[id]; c != nil {
		if c.peer == "" {
			c.peer = strings.Clone(r.ReplyTo) // the decoded string is the message buffer's
		}
		s.queueLocked(id, c) // frames that overtook the head are owed
	}
}

// dropped takes an answer frame of copy id, discarded: its bytes are
// granted back, until its last.
func (s *mirrorSender) dropped(id uint64, f *envelope.Frame) {
	if f.End || f.Cancel {
		s.forget(id)
		return
	}
	if len(f.Data) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.calls[id]; c != nil {
		c.owed += int64(len(f.Data))
		s.queueLocked(id, c)
	}
}

// pinged takes the shadow adapter's liveness ping for copy id: pong while
// it is tracked, cancel when it is not.
func (s *mirrorSender) pinged(id uint64, replyTo string) {
	if replyTo == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[id]
	if c == nil {
		select {
		case s.strays <- mirrorStray{id: id, peer: strings.Clone(replyTo)}:
		default: // the adapter pings again, or reaps the call
		}
		return
	}
	if c.peer == "" {
		c.peer = strings.Clone(replyTo)
	}
	c.pong = true
	s.queueLocked(id, c)
}

// queueLocked hands c's grant or pong to answerCopies, once until sent.
func (s *mirrorSender) queueLocked(id uint64, c *mirrorCall) {
	if c.queued || c.peer == "" || (c.owed == 0 && !c.pong) {
		return
	}
	select {
	case s.control <- id:
		c.queued = true
	default: // ids of forgotten copies fill it: the next frame or ping tries again
	}
}

// answerCopies publishes the grants, pongs and cancels of the copies,
// off the inbox's delivery goroutine (a publish may block), and forgets
// copies past their time, until close.
func (s *mirrorSender) answerCopies() {
	defer close(s.ctlDone)
	t := time.NewTicker(mirrorSweep)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.sweep(now)
		case id := <-s.control:
			s.answer(id)
		case st := <-s.strays:
			ctx, cancel := context.WithTimeout(s.ctx, mirrorControlTimeout)
			f := envelope.Frame{ID: st.id, Source: s.source, Cancel: true, Error: "the caller no longer waits for this call"}
			if err := s.pub.Publish(ctx, st.peer, &f); err != nil {
				s.logger.Debug("mirror cancel not sent", telemetry.KeySubject, st.peer, telemetry.KeyErr, err)
			}
			cancel()
		}
	}
}

// answer sends copy id's owed credit and pong in one frame: any frame
// from its caller keeps a call alive at the adapter.
func (s *mirrorSender) answer(id uint64) {
	s.mu.Lock()
	c := s.calls[id]
	if c == nil {
		s.mu.Unlock()
		return
	}
	c.queued = false
	grant := min(c.owed, 1<<31)
	f := envelope.Frame{ID: id, Source: s.source, WindowUpdate: uint32(grant), Pong: c.pong}
	c.owed -= grant
	c.pong = false
	service, peer := c.service, c.peer
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.seal(s.ctx, &service), mirrorControlTimeout)
	defer cancel()
	if err := s.pub.Publish(ctx, peer, &f); err != nil {
		s.logger.Debug("mirror grant not sent", telemetry.KeySubject, peer, telemetry.KeyErr, err)
		s.mu.Lock()
		if c := s.calls[id]; c != nil {
			c.owed += grant // granted with the next frame or pong
		}
		s.mu.Unlock()
	}
}

// sweep forgets the copies past their time: the adapter ended them at
// their deadline, or has said nothing for mirrorSilence.
func (s *mirrorSender) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.calls {
		if now.After(c.expires) {
			delete(s.calls, id)
		}
	}
}
