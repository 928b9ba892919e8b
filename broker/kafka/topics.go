package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/busmesh/busmesh/broker"
)

// requestTimeout bounds a control request (topic creation, offsets) whose
// ctx has no earlier deadline.
const requestTimeout = 10 * time.Second

// topic is a topic known to exist.
type topic struct {
	name  string
	parts int32
	next  atomic.Uint32 // round-robin partition choice
}

// topics creates the topics of the subjects in use, once each.
type topics struct {
	cfg *config
	cl  *kafka.Client

	known sync.Map // name → *topic

	mu       sync.Mutex
	creating map[string]chan struct{} // topics being looked up or created
}

func newTopics(cfg *config, cl *kafka.Client) *topics {
	return &topics{cfg: cfg, cl: cl, creating: map[string]chan struct{}{}}
}

// ensure creates topic name unless it is known to exist. Concurrent calls
// for one name make one request.
func (ts *topics) ensure(ctx context.Context, name string) (*topic, error) {
	for {
		if t, ok := ts.known.Load(name); ok {
			return t.(*topic), nil
		}
		ts.mu.Lock()
		if t, ok := ts.known.Load(name); ok {
			ts.mu.Unlock()
			return t.(*topic), nil
		}
		wait, busy := ts.creating[name]
		if !busy {
			wait = make(chan struct{})
			ts.creating[name] = wait
		}
		ts.mu.Unlock()
		if busy {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		t, err := ts.create(ctx, name)
		ts.mu.Lock()
		delete(ts.creating, name)
		if err == nil {
			ts.known.Store(name, t)
		}
		ts.mu.Unlock()
		close(wait)
		return t, err
	}
}

// create asks the cluster for topic name, with the partitions its subject
// needs and a message size limit that fits MaxMessageBytes. A topic that
// exists already is fine. kafka-go's Transport refreshes its metadata after
// a CreateTopics request, so the topic is routable when this returns.
func (ts *topics) create(ctx context.Context, name string) (*topic, error) {
	ctx, cancel := context.WithTimeout(ctx, ts.cfg.dialTimeout)
	defer cancel()
	res, err := ts.cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic:             name,
		NumPartitions:     int(ts.cfg.partitionsFor(name)),
		ReplicationFactor: int(ts.cfg.replication),
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(ts.cfg.maxBatch())},
			{ConfigName: "retention.ms", ConfigValue: strconv.FormatInt(ts.cfg.retention.Milliseconds(), 10)},
		},
	}}})
	if err != nil {
		return nil, fmt.Errorf("create topic %s: %w (%w)", name, broker.ErrDisconnected, err)
	}
	if err := res.Errors[name]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return nil, fmt.Errorf("create topic %s: %w", name, err)
	}
	// The partition count, from the Transport's cache (a topic someone else
	// created may have another).
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, 500*time.Millisecond) {
		md, err := ts.cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err == nil && len(md.Topics) == 1 {
			err = md.Topics[0].Error
			if err == nil && len(md.Topics[0].Partitions) == 0 {
				err = kafka.UnknownTopicOrPartition
			}
			if err == nil {
				return &topic{name: name, parts: int32(len(md.Topics[0].Partitions))}, nil
			}
		}
		if !sleep(ctx, wait) {
			return nil, fmt.Errorf("look up topic %s: %w (%v)", name, ctx.Err(), err)
		}
	}
}

// endOffsets returns, for every partition of t, the offset the next
// message will get: a subscription that starts there sees everything
// published after this returns. It retries while a new topic's partitions
// have no leader yet.
func (ts *topics) endOffsets(ctx context.Context, t *topic) (map[int32]int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range int(t.parts) {
		req.Topics[t.name] = append(req.Topics[t.name], kafka.LastOffsetOf(p))
	}
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		res, err := ts.cl.ListOffsets(ctx, req)
		if err == nil {
			ends := make(map[int32]int64, t.parts)
			for _, p := range res.Topics[t.name] {
				if p.Error != nil {
					err = p.Error
					break
				}
				ends[int32(p.Partition)] = p.LastOffset
			}
			if err == nil && len(ends) == int(t.parts) {
				return ends, nil
			}
		}
		if !sleep(ctx, wait/2+rand.N(wait/2)) {
			return nil, fmt.Errorf("offsets of %s: %w (%v)", t.name, ctx.Err(), err)
		}
	}
}

// withTimeout bounds ctx by requestTimeout unless it has a deadline.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, requestTimeout)
}

// sleep waits for d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is an exponential delay from 20 ms to 1 s, with jitter.
type backoff struct{ n int }

func (b *backoff) next() time.Duration {
	d := min(20*time.Millisecond<<b.n, time.Second)
	if d < time.Second {
		b.n++
	}
	return d/2 + rand.N(d/2)
}

func (b *backoff) reset() { b.n = 0 }
