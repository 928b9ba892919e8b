package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// fetchMaxBytes bounds one fetch response. The broker returns at least one
// record batch per partition, however large, so no message is stuck.
const fetchMaxBytes = 16 << 20

// subscription reads one topic for one handler through a franz-go client of
// its own: fan-out (every partition, no group) or as a queue-group member
// (the partitions the group assigns). One goroutine polls and calls the
// handler, so handler calls are serial.
type subscription struct {
	c       *Conn
	subject string
	cl      *kgo.Client
	hook    *clientHook // cl's, silenced before Unsubscribe closes cl
	h       broker.Handler

	ctx    context.Context // the handler's; cancelled by Unsubscribe
	cancel context.CancelFunc
	stop   atomic.Pointer[func() bool] // detaches from the caller's ctx

	group *member // nil for fan-out

	once sync.Once
	wg   sync.WaitGroup
}

// consumeOpts returns the options of a subscription's client: long polls
// that the broker answers as soon as a message is there, fetch_wait
// bounding an idle one, and a lost position (the log was truncated or the
// topic recreated) continued from the end. Every fetch names its
// partitions, without a fetch session (KIP-227): a subscription reads a
// few partitions, so a session saves little, and on kfake sessions held
// answers back (the e2e load-balancing case under -race: fast calls' p99
// 43-261 ms with sessions, 13-27 ms without).
func (c *config) consumeOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.FetchMaxWait(c.fetchWait),
		kgo.FetchMaxBytes(fetchMaxBytes),
		kgo.FetchMaxPartitionBytes(int32(c.maxBatch())),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
		kgo.DisableFetchSessions(),
	}
}

// Subscribe implements broker.Broker: it reads every partition of the
// subject's topic without a consumer group, from the end of each partition
// as of the call.
func (c *Conn) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	if err := c.usable(ctx); err != nil {
		return nil, err
	}
	if err := c.topics.ensure(ctx, subject); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	ends, err := c.topics.endOffsets(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	from := make(map[int32]kgo.Offset, len(ends))
	for p, off := range ends {
		from[p] = kgo.NewOffset().At(off)
	}
	hook := c.health.hook()
	cl, err := kgo.NewClient(append(append(c.clientOpts(hook), c.cfg.consumeOpts()...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{subject: from}))...)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	s := newSubscription(ctx, c, subject, cl, hook, h)
	if err := c.start(s, s.run); err != nil {
		return nil, err
	}
	s.detachOn(ctx)
	return s, nil
}

func newSubscription(ctx context.Context, c *Conn, subject string, cl *kgo.Client, hook *clientHook, h broker.Handler) *subscription {
	s := &subscription{c: c, subject: subject, cl: cl, hook: hook, h: h}
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
		s.hook.off.Store(true)
		s.cl.Close()
		return broker.ErrClosed
	}
	c.subs[s] = struct{}{}
	for _, f := range run {
		s.wg.Go(f)
	}
	return nil
}

// detachOn ends the subscription when ctx is cancelled.
func (s *subscription) detachOn(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { _ = s.Unsubscribe() })
	s.stop.Store(&stop)
}

// run polls the client and calls the handler for each message, until the
// subscription ends. A queue-group member marks each message it handled;
// franz-go commits the marks every second and when the group takes the
// partition away.
func (s *subscription) run() {
	for {
		fs := s.cl.PollFetches(s.ctx)
		if s.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(s.fetchError)
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			if s.ctx.Err() != nil {
				return
			}
			// A copy: r.Value is a slice of the whole fetch response, which a
			// handler that keeps one message (a stalled stream's frame) would
			// keep alive in full.
			s.h(s.ctx, bytes.Clone(r.Value))
			if s.group != nil {
				s.cl.MarkCommitRecords(r)
			}
		}
	}
}

// fetchError logs what franz-go could not recover from on its own; it
// retries the rest (lost connections, moved leaders) itself.
func (s *subscription) fetchError(topic string, part int32, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if s.group != nil {
		s.group.failed(err)
	}
	if topicLost(err) {
		s.c.health.suspect() // check the topics
	}
	lv := s.c.logger.Warn
	if kerr.IsRetriable(err) {
		lv = s.c.logger.Debug
	}
	lv("subscription interrupted", telemetry.KeySubject, s.subject, keyPartition, part, telemetry.KeyErr, err)
}

// Unsubscribe implements broker.Subscription. A queue-group member commits
// what it handled and leaves its group, so the others rebalance at once.
func (s *subscription) Unsubscribe() error {
	s.once.Do(func() {
		s.cancel()
		if stop := s.stop.Load(); stop != nil {
			(*stop)()
		}
		s.wg.Wait() // a running handler returns first
		if s.group != nil {
			// Commit and leave, unless the coordinator is away: then the
			// group drops the member after its session timeout.
			ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
			_ = s.cl.LeaveGroupContext(ctx)
			cancel()
		}
		s.hook.off.Store(true)
		s.cl.Close()
		s.c.mu.Lock()
		delete(s.c.subs, s)
		s.c.mu.Unlock()
	})
	return nil
}
