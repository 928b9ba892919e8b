package kafka

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/busmesh/busmesh/broker"
)

// requestTimeout bounds a control request (topic creation, offsets) whose
// ctx has no earlier deadline.
const requestTimeout = 10 * time.Second

// topics creates the topics of the subjects in use, once each.
type topics struct {
	cfg *config
	cl  *kgo.Client
	adm *kadm.Client

	known sync.Map // topic name → kadm.TopicID: exists, under that ID

	mu       sync.Mutex
	creating map[string]chan struct{} // topics being looked up or created
}

func newTopics(cfg *config, cl *kgo.Client) *topics {
	return &topics{cfg: cfg, cl: cl, adm: kadm.NewClient(cl), creating: map[string]chan struct{}{}}
}

// ensure creates topic name unless it is known to exist. Concurrent calls
// for one name make one request.
func (ts *topics) ensure(ctx context.Context, name string) error {
	if _, ok := ts.known.Load(name); ok {
		return nil
	}
	for {
		ts.mu.Lock()
		if _, ok := ts.known.Load(name); ok {
			ts.mu.Unlock()
			return nil
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
				return ctx.Err()
			}
		}
		id, err := ts.create(ctx, name)
		ts.mu.Lock()
		delete(ts.creating, name)
		if err == nil {
			ts.known.Store(name, id)
		}
		ts.mu.Unlock()
		close(wait)
		return err
	}
}

// create asks the cluster for topic name, with the partitions its subject
// needs and a message size limit that fits MaxMessageBytes, and returns its
// ID. A topic that exists already is fine.
func (ts *topics) create(ctx context.Context, name string) (kadm.TopicID, error) {
	ctx, cancel := context.WithTimeout(ctx, ts.cfg.dialTimeout)
	defer cancel()
	maxBytes := strconv.Itoa(ts.cfg.maxBatch())
	retention := strconv.FormatInt(ts.cfg.retention.Milliseconds(), 10)
	res, err := ts.adm.CreateTopic(ctx, ts.cfg.partitionsFor(name), ts.cfg.replication, map[string]*string{
		"max.message.bytes": &maxBytes,
		"retention.ms":      &retention,
	}, name)
	if err == nil {
		err = res.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		var kafkaErr *kerr.Error
		if !errors.As(err, &kafkaErr) {
			// No broker answered.
			return kadm.TopicID{}, fmt.Errorf("create topic %s: %w (%w)", name, broker.ErrDisconnected, err)
		}
		if res.ErrMessage != "" {
			return kadm.TopicID{}, fmt.Errorf("create topic %s: %w: %s", name, err, res.ErrMessage)
		}
		return kadm.TopicID{}, fmt.Errorf("create topic %s: %w", name, err)
	}
	if err == nil && res.ID != (kadm.TopicID{}) {
		return res.ID, nil
	}
	// Created by someone else (or by a broker that does not say the ID).
	found, err := ts.lookup(ctx, name)
	if err == nil {
		err = found[name].err
	}
	if err != nil {
		return kadm.TopicID{}, fmt.Errorf("look up topic %s: %w", name, err)
	}
	return found[name].id, nil
}

// topicState is what the cluster says about one topic.
type topicState struct {
	id    kadm.TopicID
	parts int
	err   error // kerr.UnknownTopicOrPartition: the cluster has no such topic
}

// lookup asks the cluster about topics, bypassing franz-go's metadata
// cache (kadm's ListTopics answers from it for up to MetadataMinAge, which
// may predate a restart).
func (ts *topics) lookup(ctx context.Context, names ...string) (map[string]topicState, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, n := range names {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, rt)
	}
	res, err := req.RequestWith(ctx, ts.cl)
	if err != nil {
		return nil, err
	}
	found := make(map[string]topicState, len(names))
	for _, n := range names {
		found[n] = topicState{err: kerr.UnknownTopicOrPartition}
	}
	for _, t := range res.Topics {
		if t.Topic != nil {
			found[*t.Topic] = topicState{id: t.TopicID, parts: len(t.Partitions), err: kerr.ErrorForCode(t.ErrorCode)}
		}
	}
	return found, nil
}

// names returns the topics known to exist.
func (ts *topics) names() []string {
	var names []string
	ts.known.Range(func(k, _ any) bool {
		names = append(names, k.(string))
		return true
	})
	return names
}

// endOffsets returns, for every partition of topic name, the offset the
// next message will get: a subscription that starts there sees everything
// published after this returns. It retries while a new topic's partitions
// have no leader yet.
func (ts *topics) endOffsets(ctx context.Context, name string) (map[int32]int64, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	for wait := 20 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		listed, err := ts.adm.ListEndOffsets(ctx, name)
		if err == nil {
			err = listed.Error()
		}
		if err == nil && len(listed[name]) == 0 {
			err = kerr.UnknownTopicOrPartition
		}
		if err == nil {
			ends := make(map[int32]int64, len(listed[name]))
			for p, o := range listed[name] {
				ends[p] = o.Offset
			}
			return ends, nil
		}
		if !kerr.IsRetriable(err) && !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return nil, fmt.Errorf("offsets of %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("offsets of %s: %w (%w)", name, ctx.Err(), err)
		case <-time.After(wait/2 + rand.N(wait/2)):
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
