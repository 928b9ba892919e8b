package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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
	commitInterval    = time.Second
	leaveTimeout      = 2 * time.Second // for the last commit and leaving
)

// member is a subscription's membership in a consumer group, which
// franz-go runs: join, cooperative-sticky assignment, heartbeats, commits
// and leaving.
type member struct {
	s       *subscription // set after the client, which may call assigned and adjust first
	subject string
	id      string // the consumer group

	// start is where each partition ended when QueueSubscribe was called:
	// where the group starts on a partition it has no committed offset for.
	// Nothing published after QueueSubscribe returns is skipped, and
	// nothing from long before is delivered.
	start map[int32]int64

	mu      sync.Mutex
	pending map[int32]kgo.EpochOffset // start positions to commit
	kick    chan struct{}             // an assignment came

	ready     chan struct{} // closed once joined with its start positions committed
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
	if err := c.topics.ensure(ctx, subject); err != nil {
		return nil, fmt.Errorf("queue subscribe %s: %w", subject, err)
	}
	start, err := c.topics.endOffsets(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("queue subscribe %s: %w", subject, err)
	}
	m := &member{subject: subject, id: GroupID(subject, group), start: start, kick: make(chan struct{}, 1), ready: make(chan struct{})}
	hook := c.health.hook()
	cl, err := kgo.NewClient(append(append(c.clientOpts(hook), c.cfg.consumeOpts()...),
		kgo.ConsumerGroup(m.id),
		kgo.ConsumeTopics(subject),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.HeartbeatInterval(heartbeatInterval),
		kgo.SessionTimeout(sessionTimeout),
		kgo.RebalanceTimeout(rebalanceTimeout),
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(commitInterval),
		kgo.OnPartitionsAssigned(m.assigned),
		kgo.AdjustFetchOffsetsFn(m.adjust),
	)...)
	if err != nil {
		return nil, fmt.Errorf("queue subscribe %s: %w", subject, err)
	}
	s := newSubscription(ctx, c, subject, cl, hook, h)
	s.group, m.s = m, s
	if err := c.start(s, s.run, m.commitStarts); err != nil {
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

// assigned runs when the group assigns partitions. With none new, the
// member has joined; new ones get their positions in adjust first.
func (m *member) assigned(_ context.Context, _ *kgo.Client, added map[string][]int32) {
	if len(added[m.subject]) == 0 {
		m.wake()
	}
}

// adjust starts each newly assigned partition the group has no committed
// offset for where it ended when QueueSubscribe was called, and queues that
// position to be committed: a member that takes the partition over later
// starts there, not at its own (later) start.
func (m *member) adjust(_ context.Context, offs map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	m.mu.Lock()
	for p, o := range offs[m.subject] {
		if o.EpochOffset().Offset >= 0 {
			continue // committed
		}
		at := m.start[p] // 0 for a partition added since: read it all
		offs[m.subject][p] = kgo.NewOffset().At(at)
		if m.pending == nil {
			m.pending = map[int32]kgo.EpochOffset{}
		}
		m.pending[p] = kgo.EpochOffset{Epoch: -1, Offset: at}
	}
	m.mu.Unlock()
	m.wake()
	return offs, nil
}

func (m *member) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// commitStarts commits the start positions adjust chose, outside
// franz-go's callbacks, which must not commit. The member is ready once
// they are committed.
func (m *member) commitStarts() {
	s := m.s
	var retry <-chan time.Time
	for {
		select {
		case <-m.kick:
		case <-retry:
		case <-s.ctx.Done():
			return
		}
		retry = nil
		m.mu.Lock()
		pending := m.pending
		m.pending = nil
		m.mu.Unlock()
		// A partition the handler has passed already commits by its marks.
		for p := range s.cl.MarkedOffsets()[s.subject] {
			delete(pending, p)
		}
		if len(pending) == 0 {
			m.markReady()
			continue
		}
		var err error
		s.cl.CommitOffsetsSync(s.ctx, map[string]map[int32]kgo.EpochOffset{s.subject: pending},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, res *kmsg.OffsetCommitResponse, cerr error) {
				err = cerr
				if res == nil {
					return
				}
				for _, t := range res.Topics {
					for _, p := range t.Partitions {
						err = errors.Join(err, kerr.ErrorForCode(p.ErrorCode))
					}
				}
			})
		if err == nil {
			m.markReady()
			continue
		}
		if s.ctx.Err() != nil {
			return
		}
		m.failed(err)
		s.c.logger.Debug("commit failed", telemetry.KeySubject, s.subject, keyGroup, m.id, telemetry.KeyErr, err)
		select {
		case <-m.ready:
			// Joined: the partitions may have moved on; their marks commit.
		default:
			// Still joining: try again after the rebalance settles.
			m.mu.Lock()
			for p, o := range pending {
				if _, newer := m.pending[p]; !newer {
					if m.pending == nil {
						m.pending = map[int32]kgo.EpochOffset{}
					}
					m.pending[p] = o
				}
			}
			m.mu.Unlock()
			retry = time.After(heartbeatInterval)
		}
	}
}

func (m *member) markReady() { m.readyOnce.Do(func() { close(m.ready) }) }

// failed records why the member could not join or commit, for
// QueueSubscribe's error.
func (m *member) failed(err error) { m.lastErr.Store(&err) }
