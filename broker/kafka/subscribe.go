package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	kafka "github.com/segmentio/kafka-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// fetchMaxBytes bounds one fetch response. The broker returns at least one
// record batch per partition, however large, so no message is stuck.
const fetchMaxBytes = 16 << 20

// subscription reads one topic for one handler: fan-out (every partition,
// no group) or as a queue-group member (the partitions the group assigns).
// A goroutine per partition long-polls it with Client.Fetch (kafka-go
// fetches one partition per request) and calls the handler under mu, so
// handler calls are serial.
type subscription struct {
	c       *Conn
	subject string
	t       *topic
	h       broker.Handler

	ctx    context.Context // the handler's; cancelled by Unsubscribe
	cancel context.CancelFunc
	stop   atomic.Pointer[func() bool] // detaches from the caller's ctx

	mu     sync.Mutex // held while the handler runs
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

func newSubscription(ctx context.Context, c *Conn, t *topic, h broker.Handler) *subscription {
	s := &subscription{c: c, subject: t.name, t: t, h: h}
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
	t, err := c.topics.ensure(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	ends, err := c.topics.endOffsets(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	s := newSubscription(ctx, c, t, h)
	var run []func()
	for id := range t.parts {
		p := &partPos{id: id}
		p.next.Store(ends[id])
		run = append(run, func() { s.fetch(s.ctx, p) })
	}
	if err := c.start(s, run...); err != nil {
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

// Unsubscribe implements broker.Subscription. A queue-group member commits
// what it handled and leaves its group, so the others rebalance at once.
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

// fetch long-polls partition p until ctx ends and hands what arrives to the
// handler. MinBytes 1 makes the broker answer as soon as a message is
// there; fetch_wait only bounds an idle poll. Failures (a lost connection,
// a moved leader) are retried with backoff; kafka-go's Transport routes the
// next request by its cached metadata.
func (s *subscription) fetch(ctx context.Context, p *partPos) {
	var bo backoff
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, s.c.cfg.fetchWait+requestTimeout)
		res, err := s.c.cl.Fetch(fctx, &kafka.FetchRequest{
			Topic:     s.t.name,
			Partition: int(p.id),
			Offset:    p.next.Load(),
			MinBytes:  1,
			MaxBytes:  fetchMaxBytes,
			MaxWait:   s.c.cfg.fetchWait,
		})
		cancel()
		if err == nil {
			err = res.Error
		}
		if err == nil {
			err = s.handAll(ctx, p, res.Records)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			bo.reset()
			continue
		}
		if errors.Is(err, kafka.OffsetOutOfRange) {
			// The log was truncated or the topic recreated: go on from its end.
			if ends, err := s.c.topics.endOffsets(ctx, s.t); err == nil {
				p.next.Store(ends[p.id])
			}
			continue
		}
		if s.group != nil {
			s.group.failed(err)
		}
		s.c.logger.Debug("subscription interrupted", telemetry.KeySubject, s.subject, keyPartition, p.id, telemetry.KeyErr, err)
		sleep(ctx, bo.next())
	}
}

// handAll hands the records of one fetch to the handler in order, skipping
// those before p's position (a batch can start earlier).
func (s *subscription) handAll(ctx context.Context, p *partPos, rr kafka.RecordReader) error {
	for {
		rec, err := rr.ReadRecord()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var value []byte
		if rec.Offset >= p.next.Load() {
			value, err = kafka.ReadAll(rec.Value)
		}
		if rec.Key != nil {
			rec.Key.Close()
		}
		if rec.Value != nil {
			rec.Value.Close()
		}
		if err != nil {
			return err
		}
		if rec.Offset < p.next.Load() {
			continue
		}
		s.mu.Lock()
		if s.closed || ctx.Err() != nil {
			s.mu.Unlock()
			return nil
		}
		s.h(s.ctx, value)
		p.next.Store(rec.Offset + 1)
		s.mu.Unlock()
	}
}
