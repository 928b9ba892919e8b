package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/fetch"
	"github.com/segmentio/kafka-go/protocol/listoffsets"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// fetchMaxBytes bounds one fetch response. The broker returns at least one
// record batch per partition, however large, so no message is stuck.
const fetchMaxBytes = 16 << 20

// subscription reads one topic for one handler: fan-out (every partition,
// no group) or as a queue-group member (the partitions the group assigns).
//
// Fetch loops, one per partition leader, hand messages one at a time to a
// single delivery goroutine, so handler calls are serial however many
// brokers the partitions live on.
type subscription struct {
	c       *Conn
	subject string
	t       *topic
	h       broker.Handler

	ctx    context.Context // the handler's; cancelled by Unsubscribe
	cancel context.CancelFunc
	stop   atomic.Pointer[func() bool] // detaches from the caller's ctx

	msgs chan delivery

	// mu is held while the handler runs, so Unsubscribe can wait for it.
	mu     sync.Mutex
	closed bool

	group *member // nil for fan-out

	once sync.Once
	wg   sync.WaitGroup
}

// partPos is a partition being read and the offset of the next message to
// hand to the handler.
type partPos struct {
	id   int32
	next atomic.Int64
}

// delivery is a message on its way to the handler. The delivery goroutine
// answers on ack whether it took the message, before the handler runs.
type delivery struct {
	value []byte
	ack   chan bool
}

func newSubscription(ctx context.Context, c *Conn, subject string, t *topic, h broker.Handler) *subscription {
	s := &subscription{c: c, subject: subject, t: t, h: h, msgs: make(chan delivery)}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return s
}

// start registers s with c and starts its goroutines, unless c is closed.
// Doing both under c.mu means Close waits for all of them or none.
func (c *Conn) start(s *subscription, run ...func()) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		s.cancel()
		return broker.ErrClosed
	}
	c.subs[s] = struct{}{}
	for _, f := range run {
		s.wg.Go(f)
	}
	return nil
}

// Subscribe implements broker.Broker: it reads every partition of the
// subject's topic without a consumer group, from the end of each partition
// as of the call.
func (c *Conn) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	t, err := c.cl.topic(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	ends, err := c.cl.endOffsets(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	parts := make([]*partPos, 0, len(ends))
	for id := range int32(t.partitions()) {
		p := &partPos{id: id}
		p.next.Store(ends[id])
		parts = append(parts, p)
	}
	s := newSubscription(ctx, c, subject, t, h)
	if err := c.start(s, s.deliver, func() { s.fetch(s.ctx, parts) }); err != nil {
		return nil, err
	}
	s.detachOn(ctx)
	return s, nil
}

// detachOn ends the subscription when ctx is cancelled.
func (s *subscription) detachOn(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { _ = s.Unsubscribe() })
	s.stop.Store(&stop)
}

// deliver runs the handler for each message, one at a time.
func (s *subscription) deliver() {
	for {
		select {
		case d := <-s.msgs:
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				d.ack <- false
				return
			}
			d.ack <- true
			s.h(s.ctx, d.value)
			s.mu.Unlock()
		case <-s.ctx.Done():
			return
		}
	}
}

// hand gives one message to the delivery goroutine and, once it took it,
// moves p past it. It returns false when ctx ended or the subscription
// closed first.
func (s *subscription) hand(ctx context.Context, p *partPos, off int64, value []byte, ack chan bool) bool {
	select {
	case s.msgs <- delivery{value: value, ack: ack}:
	case <-ctx.Done():
		return false
	}
	if !<-ack {
		return false
	}
	p.next.Store(off + 1)
	return true
}

// Unsubscribe implements broker.Subscription.
func (s *subscription) Unsubscribe() error {
	s.once.Do(func() {
		s.cancel()
		if stop := s.stop.Load(); stop != nil {
			(*stop)()
		}
		s.mu.Lock() // waits for a running handler
		s.closed = true
		s.mu.Unlock()
		if s.group != nil {
			s.group.close()
		}
		s.wg.Wait()
		s.c.mu.Lock()
		delete(s.c.subs, s)
		s.c.mu.Unlock()
	})
	return nil
}

// fetch reads parts until ctx ends: one fetch loop per partition leader,
// all restarted on fresh metadata when one fails (a lost connection, a
// leader that moved).
func (s *subscription) fetch(ctx context.Context, parts []*partPos) {
	if len(parts) == 0 {
		<-ctx.Done()
		return
	}
	var bo backoff
	for ctx.Err() == nil {
		groups, missing := s.c.cl.byLeader(s.t, parts)
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if missing {
			// Read what has a leader; look again for the rest soon.
			rctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		start := time.Now()
		err := s.fetchRound(rctx, groups)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			bo.reset()
		}
		if err != nil {
			var kerr kafka.Error
			if errors.As(err, &kerr) {
				s.c.logger.Debug("subscription interrupted", telemetry.KeySubject, s.subject, telemetry.KeyErr, err)
			}
			s.c.cl.refresh(ctx, s.t, 100*time.Millisecond)
			if !sleep(ctx, bo.next()) {
				return
			}
		} else if missing {
			s.c.cl.refresh(ctx, s.t, 100*time.Millisecond)
		}
	}
}

// fetchRound runs a fetch loop per leader until ctx ends or one fails, and
// returns the first failure.
func (s *subscription) fetchRound(ctx context.Context, groups map[int32][]*partPos) error {
	if len(groups) == 0 {
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(groups))
	var wg sync.WaitGroup
	for node, parts := range groups {
		wg.Go(func() {
			errs <- s.fetchFrom(ctx, node, parts)
			cancel()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// fetchFrom long-polls node for parts and hands what arrives to the
// handler. MinBytes 1 makes the broker answer as soon as anything is there;
// the wait only bounds an idle poll.
func (s *subscription) fetchFrom(ctx context.Context, node int32, parts []*partPos) error {
	addr := s.c.cl.addr(node)
	w, err := dialWire(ctx, s.c.cfg, addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		s.c.health.lost(addr, err)
		return err
	}
	defer w.close()
	s.c.health.ok(addr)
	byID := make(map[int32]*partPos, len(parts))
	req := &fetch.Request{
		ReplicaID:    -1,
		MaxWaitTime:  int32(s.c.cfg.fetchWait / time.Millisecond),
		MinBytes:     1,
		MaxBytes:     fetchMaxBytes,
		SessionEpoch: -1, // no fetch session: every request names its partitions
		Topics:       []fetch.RequestTopic{{Topic: s.t.name, Partitions: make([]fetch.RequestPartition, len(parts))}},
	}
	for _, p := range parts {
		byID[p.id] = p
	}
	ack := make(chan bool, 1)
	pollTimeout := s.c.cfg.fetchWait + requestTimeout
	for {
		for i, p := range parts {
			req.Topics[0].Partitions[i] = fetch.RequestPartition{
				Partition:          p.id,
				CurrentLeaderEpoch: -1,
				FetchOffset:        p.next.Load(),
				LogStartOffset:     -1,
				PartitionMaxBytes:  int32(s.c.cfg.maxBatch()),
			}
		}
		pctx, cancel := context.WithTimeout(ctx, pollTimeout)
		r, err := w.roundTrip(pctx, req)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.c.health.lost(addr, err)
			return err
		}
		res := r.(*fetch.Response)
		if res.ErrorCode != 0 {
			return kafka.Error(res.ErrorCode)
		}
		for _, rt := range res.Topics {
			for _, rp := range rt.Partitions {
				p := byID[rp.Partition]
				if p == nil || rt.Topic != s.t.name {
					continue
				}
				switch code := kafka.Error(rp.ErrorCode); code {
				case 0:
				case kafka.OffsetOutOfRange:
					if err := s.skipToEnd(ctx, p); err != nil {
						return err
					}
					continue
				default:
					return fmt.Errorf("fetch %s partition %d: %w", s.t.name, p.id, code)
				}
				if rp.RecordSet.Records == nil {
					continue
				}
				if ok, err := s.handAll(ctx, p, rp.RecordSet.Records, ack); !ok {
					return err
				}
			}
		}
	}
}

// handAll hands the records of one partition's answer to the handler in
// order, skipping those before p's position (a batch can start earlier).
func (s *subscription) handAll(ctx context.Context, p *partPos, rr protocol.RecordReader, ack chan bool) (bool, error) {
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("fetch %s partition %d: %w", s.t.name, p.id, err)
		}
		off := rec.Offset
		var value []byte
		if off >= p.next.Load() {
			value, err = protocol.ReadAll(rec.Value)
		}
		if rec.Key != nil {
			rec.Key.Close()
		}
		if rec.Value != nil {
			rec.Value.Close()
		}
		if err != nil {
			return false, fmt.Errorf("fetch %s partition %d: %w", s.t.name, p.id, err)
		}
		if off < p.next.Load() {
			continue
		}
		if !s.hand(ctx, p, off, value, ack) {
			return false, nil
		}
	}
}

// skipToEnd moves p to the end of its partition after the broker said its
// position does not exist (the log was truncated or the topic recreated).
func (s *subscription) skipToEnd(ctx context.Context, p *partPos) error {
	ends := map[int32]int64{}
	if err := s.c.cl.listOffsets(ctx, s.t.leader(p.id), s.t.name, []listoffsets.RequestPartition{{Partition: p.id, CurrentLeaderEpoch: -1, Timestamp: -1}}, ends); err != nil {
		return err
	}
	s.c.logger.Warn("subscription position lost, skipping to the end", telemetry.KeySubject, s.subject,
		keyPartition, p.id, keyOffset, ends[p.id])
	p.next.Store(ends[p.id])
	return nil
}
