package kafka

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/produce"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

const (
	// maxQueued bounds the bytes waiting for one broker. Past it Publish
	// waits for room, or fails with ErrDisconnected while the broker is
	// unreachable.
	maxQueued = 32 << 20

	// maxRequest bounds one produce request; a single larger message still
	// goes alone.
	maxRequest = 8 << 20

	// maxTries is how often a message the broker refused before writing it
	// (no leader, leader moved) is routed again.
	maxTries = 5

	// flushTimeout is how long Close keeps sending what was published
	// before it.
	flushTimeout = 2 * time.Second

	produceTimeout = 10 * time.Second
)

// producer sends published messages: one sender per broker, each on its own
// connection. A sender takes everything queued for its broker when it is
// free and writes it as one produce request (group commit), so under load
// requests grow instead of queueing behind each other, and an idle sender
// writes a lone message at once.
type producer struct {
	cl     *cluster
	cfg    *config
	logger *slog.Logger
	health *health

	ctx    context.Context // cancelled when Close stops flushing
	cancel context.CancelFunc
	stop   chan struct{} // closed by close: send what is queued, then exit

	mu      sync.RWMutex
	senders map[int32]*sender
	stopped bool
	wg      sync.WaitGroup
}

// errLeaderMoved is why messages leave the queue of a broker that lost
// their partitions.
var errLeaderMoved = errors.New("partition leader moved")

// outMsg is a message waiting for its produce request.
type outMsg struct {
	t     *topic
	part  int32
	value []byte
	tries int
}

// sender owns the produce connection to one broker.
type sender struct {
	p    *producer
	node int32
	wake chan struct{} // a message was queued

	mu    sync.Mutex
	queue []outMsg
	bytes int
	down  bool          // the broker is unreachable
	room  chan struct{} // closed when the queue shrinks
}

func newProducer(cl *cluster, cfg *config, logger *slog.Logger, h *health) *producer {
	p := &producer{cl: cl, cfg: cfg, logger: logger, health: h, stop: make(chan struct{}), senders: map[int32]*sender{}}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p
}

// publish queues data for a partition of t. It blocks only while the
// broker's queue is full; closing is closed when the Conn is closing.
func (p *producer) publish(ctx context.Context, closing <-chan struct{}, t *topic, data []byte) error {
	part, node, ok := t.pick()
	if !ok {
		p.cl.refresh(ctx, t, 100*time.Millisecond)
		if part, node, ok = t.pick(); !ok {
			return broker.ErrDisconnected
		}
	}
	s, err := p.sender(node)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, closing, outMsg{t: t, part: part, value: bytes.Clone(data)})
}

// sender returns the sender for node, starting it on first use.
func (p *producer) sender(node int32) (*sender, error) {
	p.mu.RLock()
	s, stopped := p.senders[node], p.stopped
	p.mu.RUnlock()
	if s != nil && !stopped {
		return s, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil, broker.ErrClosed
	}
	s = p.senders[node]
	if s == nil {
		s = &sender{p: p, node: node, wake: make(chan struct{}, 1)}
		p.senders[node] = s
		p.wg.Go(s.run)
	}
	return s, nil
}

// close sends what is queued, for at most flushTimeout, and stops the
// senders.
func (p *producer) close() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	close(p.stop)
	giveUp := time.AfterFunc(flushTimeout, p.cancel)
	p.wg.Wait()
	giveUp.Stop()
	p.cancel()
}

func (s *sender) enqueue(ctx context.Context, closing <-chan struct{}, m outMsg) error {
	s.mu.Lock()
	for s.bytes > 0 && s.bytes+len(m.value) > maxQueued {
		if s.down {
			s.mu.Unlock()
			return broker.ErrDisconnected
		}
		if s.room == nil {
			s.room = make(chan struct{})
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-closing:
			return broker.ErrClosed
		}
		s.mu.Lock()
	}
	s.queue = append(s.queue, m)
	s.bytes += len(m.value)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// retry requeues messages that were not sent, unless they failed too often.
func (s *sender) retry(msgs []outMsg, cause error) {
	keep := msgs[:0]
	dropped := map[string]int{}
	for _, m := range msgs {
		if m.tries++; m.tries <= maxTries {
			keep = append(keep, m)
		} else {
			dropped[m.t.name]++
		}
	}
	for subject, n := range dropped {
		s.p.logger.Warn("publish failed", telemetry.KeySubject, subject, keyCount, n, telemetry.KeyErr, cause)
	}
	s.requeue(keep)
}

// requeue puts back messages that were not sent, ahead of newer ones.
func (s *sender) requeue(msgs []outMsg) {
	s.mu.Lock()
	s.queue = append(msgs, s.queue...)
	for _, m := range msgs {
		s.bytes += len(m.value)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sender) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *sender) run() {
	var w *wire
	defer func() {
		if w != nil {
			w.close()
		}
	}()
	var bo backoff
	stopping := false
	for {
		if !stopping {
			select {
			case <-s.wake:
			case <-s.p.stop:
				stopping = true
			}
		}
		for s.round(&w, &bo) {
		}
		if stopping || s.p.ctx.Err() != nil {
			return
		}
	}
}

// round writes one produce request with what is queued. It returns false
// when there was nothing to send or the producer gave up flushing.
func (s *sender) round(w **wire, bo *backoff) bool {
	ctx := s.p.ctx
	if ctx.Err() != nil {
		return false
	}
	b := s.take()
	if b == nil {
		return false
	}
	addr := s.p.cl.addr(s.node)
	if *w == nil {
		nw, err := dialWire(ctx, s.p.cfg, addr)
		if err != nil {
			s.p.health.lost(addr, err)
			s.setDown(true)
			select {
			case <-s.p.stop:
				// Closing, and the broker is away: waiting for it would
				// only delay Close.
				s.mu.Lock()
				n := b.n + len(s.queue)
				s.queue, s.bytes = nil, 0
				s.mu.Unlock()
				s.p.logger.Warn("messages not sent before close", telemetry.KeyBroker, addr, keyCount, n, telemetry.KeyErr, err)
				return false
			default:
			}
			s.requeue(b.msgs())
			// The broker may have lost its partitions to another.
			for _, t := range b.topics() {
				s.p.cl.refresh(ctx, t, 100*time.Millisecond)
			}
			s.rehome()
			sleep(ctx, bo.next())
			return true
		}
		*w = nw
		s.p.health.ok(addr)
		s.setDown(false)
	}
	rctx, cancel := context.WithTimeout(ctx, produceTimeout+5*time.Second)
	res, sent, err := (*w).exchange(rctx, b.request(s.p.cfg.acks))
	cancel()
	if err != nil {
		(*w).close()
		*w = nil
		s.p.health.lost(addr, err)
		if !sent {
			s.retry(b.msgs(), err)
		} else {
			// The broker may have written them: sending again could
			// deliver twice, and delivery is at most once.
			s.p.logger.Warn("messages lost with the connection", telemetry.KeyBroker, addr, keyCount, b.n, telemetry.KeyErr, err)
		}
		sleep(ctx, bo.next())
		return true
	}
	bo.reset()
	s.settle(ctx, b, res.(*produce.Response))
	return true
}

// settle reads the broker's answer for each partition of b.
func (s *sender) settle(ctx context.Context, b *batch, res *produce.Response) {
	var again []outMsg
	var lastErr error
	for _, rt := range res.Topics {
		for _, rp := range rt.Partitions {
			pb := b.parts[tp{rt.Topic, rp.Partition}]
			if pb == nil {
				continue
			}
			pb.settled = true
			switch code := kafka.Error(rp.ErrorCode); code {
			case 0:
			case kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.UnknownTopicOrPartition,
				kafka.NotEnoughReplicas, kafka.FencedLeaderEpoch, kafka.KafkaStorageError:
				// Not written: route again, after fresh metadata.
				again = append(again, pb.msgs...)
				lastErr = code
			default:
				s.p.logger.Warn("publish failed", telemetry.KeySubject, rt.Topic, keyCount, len(pb.msgs), telemetry.KeyErr, code)
			}
		}
	}
	for k, pb := range b.parts {
		if !pb.settled {
			s.p.logger.Warn("publish unanswered", telemetry.KeySubject, k.topic, keyCount, len(pb.msgs))
		}
	}
	if len(again) == 0 {
		return
	}
	// Leadership moved: ask where to now, give the election a moment,
	// longer each time the same messages come back.
	tries := 0
	refreshed := map[*topic]bool{}
	for _, m := range again {
		tries = max(tries, m.tries)
		if !refreshed[m.t] {
			refreshed[m.t] = true
			s.p.cl.refresh(ctx, m.t, 0)
		}
	}
	sleep(ctx, 10*time.Millisecond<<tries)
	s.p.route(again, lastErr)
}

// route sends msgs again, each to some partition that has a leader now.
func (p *producer) route(msgs []outMsg, cause error) {
	byNode := map[int32][]outMsg{}
	dropped := map[string]int{}
	for _, m := range msgs {
		m.tries++
		part, node, ok := m.t.pick()
		if !ok || m.tries > maxTries {
			dropped[m.t.name]++
			continue
		}
		m.part = part
		byNode[node] = append(byNode[node], m)
	}
	for subject, n := range dropped {
		p.logger.Warn("publish failed", telemetry.KeySubject, subject, keyCount, n, telemetry.KeyErr, cause)
	}
	for node, ms := range byNode {
		s, err := p.sender(node)
		if err != nil {
			p.logger.Warn("publish failed", telemetry.KeySubject, ms[0].t.name, keyCount, len(ms), telemetry.KeyErr, err)
			continue
		}
		s.requeue(ms)
	}
}

// rehome moves queued messages whose partition has moved to another broker.
func (s *sender) rehome() {
	s.mu.Lock()
	var stay, move []outMsg
	for _, m := range s.queue {
		if m.t.leader(m.part) == s.node {
			stay = append(stay, m)
		} else {
			move = append(move, m)
			s.bytes -= len(m.value)
		}
	}
	s.queue = stay
	s.mu.Unlock()
	if len(move) > 0 {
		s.p.route(move, errLeaderMoved)
	}
}
