package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Consumer group timing. A member notices a rebalance at its next
// heartbeat, so the interval bounds how long a joining member waits for the
// others; a member that vanishes without leaving is dropped after the
// session timeout.
const (
	heartbeatInterval = 500 * time.Millisecond
	sessionTimeout    = 10 * time.Second
	rebalanceTimeout  = 10 * time.Second
	joinBackoff       = 500 * time.Millisecond
	commitInterval    = time.Second
)

// member is a subscription's membership in a consumer group, run by
// kafka-go's ConsumerGroup (join, sync, heartbeats, leave). Each generation
// reads its partitions with the subscription's fetch loops.
type member struct {
	s  *subscription
	id string // the consumer group
	cg *kafka.ConsumerGroup

	// start is where each partition ended when QueueSubscribe was called:
	// where the group starts on a partition it has no committed offset for.
	// Nothing published after QueueSubscribe returns is skipped, and
	// nothing from long before is delivered.
	start map[int32]int64

	ready     chan struct{} // closed once this member's positions are committed
	readyOnce sync.Once
	lastErr   atomic.Pointer[error] // why joining failed, for QueueSubscribe's error
}

// GroupID returns the Kafka consumer group busmesh uses for a queue group on
// a subject. Queue groups belong to their subject, as in NATS, so two
// subjects' groups of the same name never rebalance each other.
func GroupID(subject, group string) string { return group + "@" + subject }

// QueueSubscribe implements broker.Broker with a Kafka consumer group. It
// returns once this member has joined the group, been assigned its
// partitions and committed its starting positions.
func (c *Conn) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	if group == "" {
		return nil, fmt.Errorf("queue subscribe %s: empty group name", subject)
	}
	t, err := c.cl.topic(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("queue subscribe %s: %w", subject, err)
	}
	start, err := c.cl.endOffsets(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("queue subscribe %s: %w", subject, err)
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                GroupID(subject, group),
		Brokers:           c.cfg.addrs,
		Dialer:            c.dialer,
		Topics:            []string{t.name},
		HeartbeatInterval: heartbeatInterval,
		SessionTimeout:    sessionTimeout,
		RebalanceTimeout:  rebalanceTimeout,
		JoinGroupBackoff:  joinBackoff,
		StartOffset:       kafka.LastOffset, // only a marker: positions() decides
		Timeout:           c.cfg.dialTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("queue subscribe %s: %w", subject, err)
	}
	s := newSubscription(ctx, c, subject, t, h)
	m := &member{s: s, id: GroupID(subject, group), cg: cg, start: start, ready: make(chan struct{})}
	s.group = m
	if err := c.start(s, s.deliver, m.run); err != nil {
		_ = cg.Close()
		return nil, err
	}
	select {
	case <-m.ready:
		s.detachOn(ctx)
		return s, nil
	case <-ctx.Done():
		_ = s.Unsubscribe()
		if err := m.lastErr.Load(); err != nil {
			return nil, fmt.Errorf("queue subscribe %s: %w (joining group %s: %v)", subject, ctx.Err(), m.id, *err)
		}
		return nil, ctx.Err()
	case <-s.ctx.Done(): // the Conn closed meanwhile
		_ = s.Unsubscribe()
		return nil, broker.ErrClosed
	}
}

// run takes each generation of the group and consumes it until the next.
func (m *member) run() {
	s := m.s
	failing := false
	for {
		gen, err := m.cg.Next(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			m.lastErr.Store(&err)
			if !errors.Is(err, kafka.RebalanceInProgress) && !failing {
				failing = true
				s.c.logger.Warn("queue group interrupted", telemetry.KeySubject, s.subject, keyGroup, m.id, telemetry.KeyErr, err)
			}
			continue // kafka-go waits before joining again
		}
		if failing {
			failing = false
			s.c.logger.Info("queue group rejoined", telemetry.KeySubject, s.subject, keyGroup, m.id)
		}
		parts, committed := m.positions(gen)
		// kafka-go runs fn; the subscription still waits for it, even when
		// the generation ended before Start and kafka-go would not.
		s.wg.Add(1)
		gen.Start(func(gctx context.Context) {
			defer s.wg.Done()
			m.consume(gctx, gen, parts, committed)
		})
	}
}

// positions returns where to read each partition gen assigns: the group's
// committed offset, or else where the partition ended when QueueSubscribe
// was called. committed holds the offsets the group has stored.
func (m *member) positions(gen *kafka.Generation) (parts []*partPos, committed map[int32]int64) {
	committed = map[int32]int64{}
	for _, a := range gen.Assignments[m.s.t.name] {
		p := &partPos{id: int32(a.ID)}
		off := a.Offset
		if off >= 0 {
			committed[p.id] = off
		} else if start, ok := m.start[p.id]; ok {
			off = start
		} else {
			off = 0 // a partition added since QueueSubscribe: read it all
		}
		p.next.Store(off)
		parts = append(parts, p)
	}
	return parts, committed
}

// consume reads parts for one generation. The generation ends on a
// rebalance, a lost coordinator or Unsubscribe; the positions reached are
// committed then, so the partitions' next owners start where this member
// stopped, and every second meanwhile, so a crash redelivers little.
func (m *member) consume(gctx context.Context, gen *kafka.Generation, parts []*partPos, committed map[int32]int64) {
	ctx, cancel := context.WithCancel(m.s.ctx)
	defer cancel()
	stop := context.AfterFunc(gctx, cancel)
	defer stop()
	// Positions the group had no offset for are committed before
	// QueueSubscribe returns: a member that takes a partition over in a later
	// generation starts there, not at its own (later) start.
	if m.commit(gen, parts, committed) == nil {
		m.markReady()
	}
	var wg sync.WaitGroup
	wg.Go(func() { m.s.fetch(ctx, parts) })
	tick := time.NewTicker(commitInterval)
	defer tick.Stop()
	// Only the generation's end returns: returning earlier would end the
	// generation and make kafka-go join again, rebalancing the others.
	for done := false; !done; {
		select {
		case <-tick.C:
			if m.commit(gen, parts, committed) == nil {
				m.markReady()
			}
		case <-gctx.Done():
			done = true
		}
	}
	cancel()
	wg.Wait()
	_ = m.commit(gen, parts, committed) // logged there; the next member resumes from the last commit
}

// commit stores the positions that changed since the last commit.
func (m *member) commit(gen *kafka.Generation, parts []*partPos, committed map[int32]int64) error {
	offs := map[int]int64{}
	for _, p := range parts {
		off := p.next.Load()
		if c, ok := committed[p.id]; !ok || c != off {
			offs[int(p.id)] = off
		}
	}
	if len(offs) == 0 {
		return nil
	}
	if err := gen.CommitOffsets(map[string]map[int]int64{m.s.t.name: offs}); err != nil {
		m.s.c.logger.Debug("commit failed", telemetry.KeySubject, m.s.subject, keyGroup, m.id, telemetry.KeyErr, err)
		return err
	}
	for id, off := range offs {
		committed[int32(id)] = off
	}
	return nil
}

func (m *member) markReady() { m.readyOnce.Do(func() { close(m.ready) }) }

// close ends the membership: the generation's positions are committed and
// the member leaves the group, so the others rebalance at once.
func (m *member) close() { _ = m.cg.Close() }
