package ambassador

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/internal/bus"
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
)

// mirrorCopy is an encoded copy of a request, waiting to be published.
type mirrorCopy struct {
	subject, service, version string
	data                      []byte
}

// mirrorSender publishes the mirrored copies bound for one broker, off the
// caller's path: a copy is encoded while the call is at hand and queued,
// and one goroutine seals and publishes the queue. A broker that is slow
// to take messages (a Kafka topic being created, RabbitMQ flow control, a
// shadow broker in trouble) delays copies, never callers; a full queue
// drops copies.
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
}

func newMirrorSender(pub *bus.Publisher, label string, metrics *telemetry.Metrics, logger *slog.Logger) *mirrorSender {
	ctx, cancel := context.WithCancel(context.Background())
	return &mirrorSender{pub: pub, label: label, metrics: metrics, logger: logger,
		queue: make(chan mirrorCopy, mirrorQueue), ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

// start runs the publishing goroutine; close ends it.
func (s *mirrorSender) start() {
	if s.started.CompareAndSwap(false, true) {
		go s.run()
	}
}

// send queues c without waiting; with the queue full, c is dropped.
func (s *mirrorSender) send(c mirrorCopy) {
	select {
	case s.queue <- c:
	default:
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
}
