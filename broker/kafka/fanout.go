package kafka

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// queueBytes is how much a fan-out subscription's queue holds before its
// topic is paused. A blocked handler holds back its topic; its
// subscription then keeps at most about twice this plus one fetch: the
// queue it took, and what came since.
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
//
// mu guards the subscriptions and their queues, and is never held across
// a call to franz-go that may wait (on a silent cluster, one that goes
// through its metadata loop can wait for a minute); the changes to what the
// client reads are made in order under kmu.
type fanout struct {
	c      *Conn
	mu     sync.Mutex
	topics map[string]*fanTopic

	kmu     sync.Mutex
	reading map[string][]int32 // topics the client reads, with their partitions
}

// fanTopic is a topic read for one or more subscriptions.
type fanTopic struct {
	subs  []*fanSub
	full  int          // subscriptions whose queue is past queueBytes: paused while > 0
	id    kadm.TopicID // the topic's instance; a fetch of another is an old one's
	parts []int32
	// next is, per partition, the offset of the next record to deliver:
	// what a fetch from before the topic was read again holds of it is
	// left out.
	next map[int32]int64
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
	known, _ := c.topics.known.Load(subject)
	id, _ := known.(kadm.TopicID)
	s := &fanSub{f: c.fan, subject: subject, h: h, start: start, wake: make(chan struct{}, 1), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.mu.Lock() // Close waits for every subscription or none
	if c.closed {
		c.mu.Unlock()
		return nil, broker.ErrClosed
	}
	c.fan.add(s, id)
	go s.run()
	c.mu.Unlock()
	c.fan.sync(subject)
	stop := context.AfterFunc(ctx, func() { _ = s.Unsubscribe() })
	s.stop.Store(&stop)
	return s, nil
}

// add delivers s's topic to s, from where s starts.
func (f *fanout) add(s *fanSub, id kadm.TopicID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t := f.topics[s.subject]; t != nil {
		t.subs = append(t.subs, s)
		return
	}
	t := &fanTopic{subs: []*fanSub{s}, id: id, next: maps.Clone(s.start)}
	t.parts = slices.Collect(maps.Keys(s.start))
	f.topics[s.subject] = t
}

// sync has the client read topic while a subscription wants it, from the
// next record to deliver, and not after.
func (f *fanout) sync(topic string) {
	f.kmu.Lock()
	defer f.kmu.Unlock()
	f.mu.Lock()
	t := f.topics[topic]
	var parts []int32
	from := map[int32]kgo.Offset{}
	if t != nil {
		parts = slices.Clone(t.parts)
		for _, p := range parts {
			from[p] = kgo.NewOffset().At(t.next[p])
		}
	}
	f.mu.Unlock()
	switch read := f.reading[topic]; {
	case t != nil && read == nil:
		f.c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
		f.reading[topic] = parts
	case t == nil && read != nil:
		// Not PurgeTopicsFromConsuming, which waits for the metadata loop.
		f.c.cl.RemoveConsumePartitions(map[string][]int32{topic: read})
		delete(f.reading, topic)
	}
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
		fs.EachTopic(f.deliver)
		f.mu.Unlock()
	}
}

// deliver queues a topic's records for its subscriptions, each from where
// it starts. f.mu is held.
func (f *fanout) deliver(ft kgo.FetchTopic) {
	t := f.topics[ft.Topic]
	if t == nil || kadm.TopicID(ft.TopicID) != t.id && ft.TopicID != [16]byte{} && t.id != (kadm.TopicID{}) {
		return // unsubscribed since the fetch, or an instance the cluster lost
	}
	for _, p := range ft.Partitions {
		records := p.Records
		if next, ok := t.next[p.Partition]; ok {
			for len(records) > 0 && records[0].Offset < next {
				records = records[1:]
			}
		}
		if len(records) == 0 {
			continue
		}
		t.next[p.Partition] = records[len(records)-1].Offset + 1
		for _, s := range t.subs {
			from, ok := s.start[p.Partition]
			for _, r := range records {
				if ok && r.Offset < from {
					continue
				}
				// A copy: r.Value is a slice of the whole fetch response,
				// which a handler that keeps one message (a stalled
				// stream's frame) would keep alive in full.
				s.queue = append(s.queue, bytes.Clone(r.Value))
				s.size += len(r.Value)
			}
		}
	}
	for _, s := range t.subs {
		if len(s.queue) == 0 {
			continue
		}
		if s.size > queueBytes && !s.full {
			s.full = true
			if t.full++; t.full == 1 {
				f.c.cl.PauseFetchTopics(ft.Topic)
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
		f.unpause(s.subject, f.topics[s.subject])
	}
	return q
}

// unpause counts one subscription of t as no longer full. f.mu is held.
func (f *fanout) unpause(topic string, t *fanTopic) {
	if t.full--; t.full == 0 {
		f.c.cl.ResumeFetchTopics(topic)
	}
}

// remove stops delivering to s, and reading its topic if no other
// subscription reads it.
func (f *fanout) remove(s *fanSub) {
	f.mu.Lock()
	t := f.topics[s.subject]
	if i := slices.Index(t.subs, s); i >= 0 {
		if s.full {
			s.full = false
			f.unpause(s.subject, t)
		}
		t.subs = slices.Delete(t.subs, i, i+1)
	}
	if len(t.subs) == 0 {
		delete(f.topics, s.subject)
	}
	f.mu.Unlock()
	f.sync(s.subject)
}

// resume reads topic, if read, recreated under a new ID with parts
// partitions, from its first message: everything in it was published after
// the old one was lost.
func (f *fanout) resume(topic string, id kadm.TopicID, parts int) {
	f.kmu.Lock()
	defer f.kmu.Unlock()
	f.mu.Lock()
	t := f.topics[topic]
	if t != nil {
		t.id, t.parts, t.next = id, nil, map[int32]int64{}
		for p := range int32(parts) {
			t.parts = append(t.parts, p)
		}
		for _, s := range t.subs {
			s.start = nil
		}
	}
	f.mu.Unlock()
	if t == nil || f.reading[topic] == nil {
		return // its sync reads it from the start
	}
	f.c.cl.PurgeTopicsFromConsuming(topic)
	from := make(map[int32]kgo.Offset, parts)
	for p := range int32(parts) {
		from[p] = kgo.NewOffset().AtStart()
	}
	f.c.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: from})
	f.reading[topic] = slices.Clone(t.parts) // t.parts of a topic read changes only under kmu
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
