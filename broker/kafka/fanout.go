package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// queueBytes is how much a fan-out subscription's queue holds before its
// topic is paused: a blocked handler holds back its own topic, and what it
// holds is bounded by this plus one fetch.
const queueBytes = 1 << 20

// fanout reads the topics of a Conn's fan-out subscriptions through the
// Conn's own client, which also publishes: one fetch loop and one set of
// connections for them all (an adapter has six; with a client each, its
// Conn kept 20 connections to a one-broker cluster and seven long polls,
// against 9 and two). Each subscription has a queue and a goroutine that
// calls its handler, so handler calls stay serial per subscription, and a
// blocked handler holds back only its topic: past queueBytes the topic is
// paused (franz-go stops fetching it and drops what it buffered of it, to
// fetch again from there) until the handler takes the queue. Other
// subscriptions to that topic on the Conn wait with it: they read at one
// position.
type fanout struct {
	c      *Conn
	mu     sync.Mutex
	topics map[string]*fanTopic
}

// fanTopic is a topic read for one or more subscriptions.
type fanTopic struct {
	subs []*fanSub
	full int // subscriptions whose queue is past queueBytes: paused while > 0
}

// fanSub is one fan-out subscription.
type fanSub struct {
	f       *fanout
	subject string
	h       broker.Handler

	ctx    context.Context // the handler's; cancelled by Unsubscribe
	cancel context.CancelFunc
	stop   atomic.Pointer[func() bool] // detaches from the caller's ctx

	// Guarded by f.mu.
	start map[int32]int64 // per partition, the offset this subscription starts at
	queue [][]byte
	size  int // bytes in queue
	full  bool
	wake  chan struct{}

	once sync.Once
	done chan struct{} // closed when the handler goroutine returned
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
	start, err := c.topics.endOffsets(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	s := &fanSub{f: c.fan, subject: subject, h: h, start: start, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.mu.Lock() // Close waits for every subscription or none
	defer c.mu.Unlock()
	if c.closed {
		return nil, broker.ErrClosed
	}
	c.fan.add(s)
	go s.run()
	stop := context.AfterFunc(ctx, func() { _ = s.Unsubscribe() })
	s.stop.Store(&stop)
	return s, nil
}

// add has the fetch loop read s's topic from where s starts, unless it
// reads it already for another subscription.
func (f *fanout) add(s *fanSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.topics[s.subject]
	if t != nil {
		t.subs = append(t.subs, s)
		return
	}
	f.topics[s.subject] = &fanTopic{subs: []*fanSub{s}}
	from := make(map[int32]kgo.Offset, len(s.start))
	for p, off := range s.start {
		from[p] = kgo.NewOffset().At(off)
	}
	f.c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{s.subject: from})
}

// run fetches for every subscription until the Conn closes.
func (f *fanout) run() {
	for {
		fs := f.c.cl.PollFetches(f.c.ctx)
		if f.c.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, part int32, err error) { logFetchError(f.c, topic, part, err) })
		f.mu.Lock()
		fs.EachPartition(f.deliver)
		f.mu.Unlock()
	}
}

// deliver queues a partition's records for the subscriptions of its
// topic, each from where it starts. f.mu is held.
func (f *fanout) deliver(p kgo.FetchTopicPartition) {
	t := f.topics[p.Topic]
	if t == nil || len(p.Records) == 0 {
		return // unsubscribed since the fetch
	}
	for _, s := range t.subs {
		from, ok := s.start[p.Partition]
		for _, r := range p.Records {
			if ok && r.Offset < from {
				continue
			}
			// A copy: r.Value is a slice of the whole fetch response, which
			// a handler that keeps one message (a stalled stream's frame)
			// would keep alive in full.
			s.queue = append(s.queue, bytes.Clone(r.Value))
			s.size += len(r.Value)
		}
		if s.size > queueBytes && !s.full {
			s.full = true
			if t.full++; t.full == 1 {
				f.c.cl.PauseFetchTopics(p.Topic)
			}
		}
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// take returns s's queue, emptied, and resumes its topic if s paused it.
func (f *fanout) take(s *fanSub) [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := s.queue
	s.queue, s.size = nil, 0
	if s.full {
		s.full = false
		f.unpause(f.topics[s.subject])
	}
	return q
}

// unpause counts one subscription of t as no longer full. f.mu is held.
func (f *fanout) unpause(t *fanTopic) {
	if t.full--; t.full == 0 {
		f.c.cl.ResumeFetchTopics(t.subs[0].subject)
	}
}

// remove stops delivering to s, and reading its topic if no other
// subscription reads it.
func (f *fanout) remove(s *fanSub) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.topics[s.subject]
	if i := slices.Index(t.subs, s); i >= 0 {
		if s.full {
			s.full = false
			f.unpause(t)
		}
		t.subs = append(t.subs[:i], t.subs[i+1:]...)
	}
	if len(t.subs) == 0 {
		delete(f.topics, s.subject)
		f.c.cl.PurgeTopicsFromConsuming(s.subject)
	}
}

// resume reads topic, if read, recreated under a new ID with parts
// partitions, from its first message: everything in it was published after
// the old one was lost.
func (f *fanout) resume(topic string, parts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := f.topics[topic]
	if t == nil {
		return
	}
	for _, s := range t.subs {
		s.start = nil
	}
	f.c.cl.PurgeTopicsFromConsuming(topic)
	from := make(map[int32]kgo.Offset, parts)
	for p := range int32(parts) {
		from[p] = kgo.NewOffset().AtStart()
	}
	f.c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
}

// all returns every fan-out subscription, for Close.
func (f *fanout) all() []*fanSub {
	f.mu.Lock()
	defer f.mu.Unlock()
	var subs []*fanSub
	for _, t := range f.topics {
		subs = append(subs, t.subs...)
	}
	return subs
}

// logFetchError logs a subscription's fetch error, at debug level when
// franz-go retries it, and has the Conn check its topics when one is lost.
func logFetchError(c *Conn, topic string, part int32, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if topicLost(err) {
		c.health.suspect() // check the topics
	}
	lv := c.logger.Warn
	if kerr.IsRetriable(err) {
		lv = c.logger.Debug
	}
	lv("subscription interrupted", telemetry.KeySubject, topic, keyPartition, part, telemetry.KeyErr, err)
}

// run calls the handler for each queued message until Unsubscribe.
func (s *fanSub) run() {
	defer close(s.done)
	for {
		select {
		case <-s.wake:
		case <-s.ctx.Done():
			return
		}
		for _, data := range s.f.take(s) {
			if s.ctx.Err() != nil {
				return
			}
			s.h(s.ctx, data)
		}
	}
}

// Unsubscribe implements broker.Subscription: no message is delivered
// after it returns, and a running handler has returned.
func (s *fanSub) Unsubscribe() error {
	s.once.Do(func() {
		if stop := s.stop.Load(); stop != nil {
			(*stop)()
		}
		s.f.remove(s)
		s.cancel()
		<-s.done
	})
	return nil
}
