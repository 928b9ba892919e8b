package kafka

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/createtopics"
	"github.com/segmentio/kafka-go/protocol/listoffsets"
	"github.com/segmentio/kafka-go/protocol/metadata"
)

// topic is one Kafka topic: a subject.
type topic struct {
	name    string
	leaders atomic.Pointer[[]int32] // by partition; -1 while a partition has no leader
	rr      atomic.Uint32           // round-robin position for Publish
	updated atomic.Int64            // when leaders were last set, in Unix ns
}

func (t *topic) setLeaders(l []int32) {
	t.leaders.Store(&l)
	t.updated.Store(time.Now().UnixNano())
}

// leader returns partition p's leader, or -1.
func (t *topic) leader(p int32) int32 {
	l := *t.leaders.Load()
	if int(p) >= len(l) {
		return -1
	}
	return l[p]
}

// partitions returns the topic's partition count.
func (t *topic) partitions() int { return len(*t.leaders.Load()) }

// pick chooses the next partition round-robin, skipping partitions without
// a leader, so a queue group's members get equal shares.
func (t *topic) pick() (part, node int32, ok bool) {
	l := *t.leaders.Load()
	start := t.rr.Add(1)
	for i := range uint32(len(l)) {
		p := (start + i) % uint32(len(l))
		if l[p] >= 0 {
			return int32(p), l[p], true
		}
	}
	return 0, -1, false
}

// leaders returns the leader of each of mt's partitions, -1 for none.
func leaders(mt metadata.ResponseTopic) []int32 {
	n := 0
	for _, p := range mt.Partitions {
		n = max(n, int(p.PartitionIndex)+1)
	}
	l := make([]int32, n)
	for i := range l {
		l[i] = -1
	}
	for _, p := range mt.Partitions {
		if p.ErrorCode == 0 || kafka.Error(p.ErrorCode) == kafka.ReplicaNotAvailable {
			l[p.PartitionIndex] = p.LeaderID
		}
	}
	return l
}

// topic returns the topic for subject, creating it on first use.
func (cl *cluster) topic(ctx context.Context, name string) (*topic, error) {
	cl.mu.RLock()
	t := cl.topics[name]
	cl.mu.RUnlock()
	if t != nil {
		return t, nil
	}
	for {
		cl.mu.Lock()
		if t := cl.topics[name]; t != nil {
			cl.mu.Unlock()
			return t, nil
		}
		wait, busy := cl.creating[name]
		if !busy {
			wait = make(chan struct{})
			cl.creating[name] = wait
		}
		cl.mu.Unlock()
		if busy {
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		t, err := cl.ensure(ctx, name)
		cl.mu.Lock()
		delete(cl.creating, name)
		if err == nil {
			cl.topics[name] = t
		}
		cl.mu.Unlock()
		close(wait)
		return t, err
	}
}

// ensure looks topic name up and creates it if it does not exist. A new
// topic is ready once every partition has a leader; one that existed, once
// some partition has.
func (cl *cluster) ensure(ctx context.Context, name string) (*topic, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 3*requestTimeout)
		defer cancel()
	}
	created := false
	var bo backoff
	for {
		m, err := cl.metadata(ctx, []string{name})
		if err != nil {
			return nil, err
		}
		if len(m.Topics) != 1 {
			return nil, fmt.Errorf("metadata for topic %s: %d topics in the answer", name, len(m.Topics))
		}
		mt := m.Topics[0]
		switch code := kafka.Error(mt.ErrorCode); code {
		case 0:
			l := leaders(mt)
			if n := len(l) - count(l, -1); len(l) > 0 && (n == len(l) || n > 0 && !created) {
				t := &topic{name: name}
				t.setLeaders(l)
				return t, nil
			}
		case kafka.UnknownTopicOrPartition:
			if !created {
				if err := cl.create(ctx, name); err != nil {
					return nil, err
				}
				created = true
				continue
			}
		case kafka.LeaderNotAvailable:
		default:
			return nil, fmt.Errorf("topic %s: %w", name, code)
		}
		if !sleep(ctx, bo.next()) {
			return nil, ctx.Err()
		}
	}
}

func count(s []int32, v int32) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// create asks the controller to create topic name, with the partitions its
// subject needs and a message size limit that fits MaxMessageBytes. A topic
// someone else created meanwhile is fine.
func (cl *cluster) create(ctx context.Context, name string) error {
	req := &createtopics.Request{
		TimeoutMs: int32(requestTimeout / time.Millisecond),
		Topics: []createtopics.RequestTopic{{
			Name:              name,
			NumPartitions:     cl.cfg.partitionsFor(name),
			ReplicationFactor: cl.cfg.replication,
			Configs: []createtopics.RequestConfig{
				{Name: "max.message.bytes", Value: strconv.Itoa(cl.cfg.maxBatch() + 64)},
				{Name: "retention.ms", Value: strconv.FormatInt(cl.cfg.retention.Milliseconds(), 10)},
			},
		}},
	}
	for attempt := 0; ; attempt++ {
		cl.mu.RLock()
		addr := cl.brokers[cl.controller]
		cl.mu.RUnlock()
		if addr == "" {
			addr = cl.candidates()[0]
		}
		r, err := cl.call(ctx, addr, req)
		if err != nil {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
		res := r.(*createtopics.Response)
		if len(res.Topics) != 1 {
			return fmt.Errorf("create topic %s: %d topics in the answer", name, len(res.Topics))
		}
		switch code := kafka.Error(res.Topics[0].ErrorCode); code {
		case 0, kafka.TopicAlreadyExists:
			return nil
		case kafka.NotController:
			if attempt < 3 {
				if _, err := cl.metadata(ctx, nil); err != nil {
					return fmt.Errorf("create topic %s: %w", name, err)
				}
				continue
			}
			fallthrough
		default:
			if msg := res.Topics[0].ErrorMessage; msg != "" {
				return fmt.Errorf("create topic %s: %w: %s", name, code, msg)
			}
			return fmt.Errorf("create topic %s: %w", name, code)
		}
	}
}

// endOffsets returns, for every partition of t, the offset the next message
// will get: a subscription that starts there sees everything published
// after this returns.
func (cl *cluster) endOffsets(ctx context.Context, t *topic) (map[int32]int64, error) {
	ends := make(map[int32]int64, t.partitions())
	var bo backoff
	for attempt := 0; ; attempt++ {
		byNode := map[int32][]listoffsets.RequestPartition{}
		for p := range int32(t.partitions()) {
			if _, ok := ends[p]; !ok {
				byNode[t.leader(p)] = append(byNode[t.leader(p)], listoffsets.RequestPartition{
					Partition: p, CurrentLeaderEpoch: -1, Timestamp: -1, // -1: the latest offset
				})
			}
		}
		if len(byNode) == 0 {
			return ends, nil
		}
		var errs []error
		for node, parts := range byNode {
			if err := cl.listOffsets(ctx, node, t.name, parts, ends); err != nil {
				errs = append(errs, err)
			}
		}
		err := errors.Join(errs...)
		if ctx.Err() != nil || attempt == 5 {
			return nil, fmt.Errorf("offsets of %s: %w", t.name, err)
		}
		cl.refresh(ctx, t, 100*time.Millisecond)
		if !sleep(ctx, bo.next()) {
			return nil, ctx.Err()
		}
	}
}

// listOffsets asks node for the latest offsets of parts and records those
// it answers in ends.
func (cl *cluster) listOffsets(ctx context.Context, node int32, name string, parts []listoffsets.RequestPartition, ends map[int32]int64) error {
	addr := cl.addr(node)
	if addr == "" {
		return fmt.Errorf("no leader for %d partitions", len(parts))
	}
	r, err := cl.call(ctx, addr, &listoffsets.Request{
		ReplicaID: -1,
		Topics:    []listoffsets.RequestTopic{{Topic: name, Partitions: parts}},
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, rt := range r.(*listoffsets.Response).Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				errs = append(errs, fmt.Errorf("partition %d: %w", rp.Partition, kafka.Error(rp.ErrorCode)))
				continue
			}
			ends[rp.Partition] = rp.Offset
		}
	}
	return errors.Join(errs...)
}

// byLeader groups parts by their leader's node; missing reports partitions
// without a known leader.
func (cl *cluster) byLeader(t *topic, parts []*partPos) (groups map[int32][]*partPos, missing bool) {
	groups = map[int32][]*partPos{}
	for _, p := range parts {
		node := t.leader(p.id)
		if node < 0 || cl.addr(node) == "" {
			missing = true
			continue
		}
		groups[node] = append(groups[node], p)
	}
	return groups, missing
}
