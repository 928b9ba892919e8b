package kafka

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// recoverTopics checks, after the cluster was away, that every topic in
// use still exists under the ID it had. A cluster restarted empty (or
// replaced, or a topic deleted) has lost them: the Conn creates them all
// again at once, those it only publishes to as well (in the fault suite,
// leaving those to the next Publish let discovery's answers arrive late
// enough for instances to expire in two runs of three). Since franz-go
// refuses to follow a topic to a new instance of the same name, it purges
// the old one from its producer and points each subscription on it at the
// new one. Other Conns find the topic recreated under a new ID and do the
// same. A check that fails is tried again.
func (c *Conn) recoverTopics() {
	names := c.topics.names()
	if len(names) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, requestTimeout)
	defer cancel()
	found, err := c.topics.lookup(ctx, names...)
	if err != nil {
		c.retryRecover("look up topics", err)
		return
	}
	c.mu.Lock()
	subscribed := map[string]bool{}
	for s := range c.subs {
		subscribed[s.subject] = true
	}
	c.mu.Unlock()
	changed := map[string]int{} // subscribed topics under a new ID → their partitions
	var purge []string          // topics the producer must forget
	for _, name := range names {
		d := found[name]
		id, parts := d.id, d.parts
		switch {
		case errors.Is(d.err, kerr.UnknownTopicOrPartition):
			if id, err = c.topics.create(ctx, name); err != nil {
				c.retryRecover("create topic "+name, err)
				continue
			}
			parts = int(c.cfg.partitionsFor(name))
		case d.err != nil:
			c.retryRecover("look up topic "+name, d.err)
			continue
		}
		if old, _ := c.topics.known.Load(name); old == id {
			continue
		}
		c.topics.known.Store(name, id)
		purge = append(purge, name)
		if subscribed[name] {
			changed[name] = parts
		}
	}
	if len(purge) == 0 {
		return
	}
	c.cl.PurgeTopicsFromProducing(purge...)
	topics := slices.Sorted(func(yield func(string) bool) {
		for t := range changed {
			if !yield(t) {
				return
			}
		}
	})
	c.logger.Warn("the cluster lost topics in use: subscriptions resumed on new ones", keyCount, len(purge), keyTopics, topics)
	c.mu.Lock()
	var subs []*subscription
	for s := range c.subs {
		if _, ok := changed[s.subject]; ok {
			subs = append(subs, s)
		}
	}
	c.mu.Unlock()
	for _, s := range subs {
		s.resume(changed[s.subject])
	}
}

// retryRecover logs why a check failed and has the watcher check again.
func (c *Conn) retryRecover(what string, err error) {
	if c.ctx.Err() != nil {
		return
	}
	c.logger.Info("topic check failed", telemetry.KeyErr, err, "step", what)
	time.AfterFunc(probeInterval, c.health.suspect)
}

// resume points the subscription at a new instance of its topic, which
// has parts partitions, from its first message: everything in it was
// published after the old one was lost. A queue-group member rejoins its
// group (which a cluster restarted empty no longer has), starting where
// the group committed nothing at the first message too.
func (s *subscription) resume(parts int) {
	if s.ctx.Err() != nil {
		return
	}
	s.cl.PurgeTopicsFromConsuming(s.subject)
	if s.group != nil {
		s.group.mu.Lock()
		s.group.start = nil
		s.group.mu.Unlock()
		s.cl.AddConsumeTopics(s.subject)
		return
	}
	from := make(map[int32]kgo.Offset, parts)
	for p := range int32(parts) {
		from[p] = kgo.NewOffset().AtStart()
	}
	s.cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{s.subject: from})
}

// topicLost reports whether err says a topic is gone or no longer the
// one a client knew.
func topicLost(err error) bool {
	return errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) ||
		errors.Is(err, kerr.InconsistentTopicID)
}

// keyTopics is the log key of a list of topics.
const keyTopics = "topics"
