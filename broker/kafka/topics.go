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

	"github.com/busmesh/busmesh/broker"
)

// requestTimeout bounds a control request (topic creation, offsets) whose
// ctx has no earlier deadline.
const requestTimeout = 10 * time.Second

// topics creates the topics of the subjects in use, once each.
type topics struct {
	cfg *config
	adm *kadm.Client

	known sync.Map // topic name → struct{}: exists

	mu       sync.Mutex
	creating map[string]chan struct{} // topics being looked up or created
}

func newTopics(cfg *config, adm *kadm.Client) *topics {
	return &topics{cfg: cfg, adm: adm, creating: map[string]chan struct{}{}}
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
		err := ts.create(ctx, name)
		ts.mu.Lock()
		delete(ts.creating, name)
		if err == nil {
			ts.known.Store(name, struct{}{})
		}
		ts.mu.Unlock()
		close(wait)
		return err
	}
}

// create asks the cluster for topic name, with the partitions its subject
// needs and a message size limit that fits MaxMessageBytes. A topic that
// exists already is fine.
func (ts *topics) create(ctx context.Context, name string) error {
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
			return fmt.Errorf("create topic %s: %w (%w)", name, broker.ErrDisconnected, err)
		}
		if res.ErrMessage != "" {
			return fmt.Errorf("create topic %s: %w: %s", name, err, res.ErrMessage)
		}
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	return nil
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
