package kafka_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	bkafka "github.com/busmesh/busmesh/broker/kafka"
)

// The failures here are kfake's own controls: a leader that moves, a broker
// that refuses requests, produce requests answered with retriable errors.
// Each time every message published reaches the fan-out subscriber and one
// queue-group member exactly once. Broker restarts are the conformance
// suite's Reconnect case (every connection cut at the proxies); rebalances
// are TestQueueGroupRebalance.

// TestLeaderMove moves every partition to the next broker of three, twice,
// while messages flow: franz-go's producer follows the NOT_LEADER answers,
// its consumers follow the new leaders.
func TestLeaderMove(t *testing.T) {
	c := startCluster(t, kfake.NumBrokers(3))
	c.answerPastEpochs()
	const subject = "move.test"
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // outlives deliveryWait
	defer cancel()
	fan, queue := flow(t, ctx, c, subject)
	pub := dial(t, c.url)
	defer pub.Close()
	n := 1500
	for i := range n {
		if i == 500 || i == 1000 {
			for p := range int32(6) {
				next := (c.kc.LeaderFor(subject, p) + 1) % 3
				if err := c.kc.MoveTopicPartition(subject, p, next); err != nil {
					t.Fatalf("MoveTopicPartition(%d → %d) = %v", p, next, err)
				}
			}
		}
		if err := pub.Publish(ctx, subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	c.checkFlow(t, subject, fan, queue, n)
}

// TestRetriableProduceErrors answers the first produce requests with
// NOT_ENOUGH_REPLICAS, an error after which the broker wrote nothing:
// franz-go sends the messages again.
func TestRetriableProduceErrors(t *testing.T) {
	c := startCluster(t)
	const subject = "retry.test"
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // outlives deliveryWait
	defer cancel()
	fan, queue := flow(t, ctx, c, subject)
	pub := dial(t, c.url)
	defer pub.Close()
	var refused atomic.Int32
	c.kc.ControlKey(int16(kmsg.Produce), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		if refused.Add(1) > 5 {
			c.kc.DropControl()
			return nil, nil, false
		}
		c.kc.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		res := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			res.Topics = append(res.Topics, st)
		}
		return res, nil, true
	})
	n := 300
	for i := range n {
		if err := pub.Publish(ctx, subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.checkFlow(t, subject, fan, queue, n)
	if got := refused.Load(); got <= 5 {
		t.Fatalf("%d produce requests reached the broker, want more than the 5 refused", got)
	}
}

// TestBrokerRefusesRequests makes the broker close every connection that
// sends it a request, for a second, while messages are published: franz-go
// reconnects, resends what it had not written and resumes fetching, and
// the group keeps its members (the session outlasts the outage).
func TestBrokerRefusesRequests(t *testing.T) {
	c := startCluster(t)
	const subject = "refuse.test"
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // outlives deliveryWait
	defer cancel()
	fan, queue := flow(t, ctx, c, subject)
	pub := dial(t, c.url)
	defer pub.Close()
	n := 200
	// The publisher knows the topic before the broker refuses: creating one
	// needs the broker.
	if err := pub.Publish(ctx, subject, []byte("0")); err != nil {
		t.Fatal(err)
	}
	var refused atomic.Int32
	refuseUntil := time.Now().Add(time.Second)
	c.kc.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		if time.Now().After(refuseUntil) {
			c.kc.DropControl()
			return nil, nil, false
		}
		c.kc.KeepControl()
		refused.Add(1)
		return nil, errors.New("refused"), true
	})
	for i := 1; i < n; i++ {
		if err := pub.Publish(ctx, subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // publishing outlasts the refusal
	}
	c.checkFlow(t, subject, fan, queue, n)
	if refused.Load() == 0 {
		t.Fatal("the broker refused no request")
	}
}

// flow subscribes a fan-out subscriber and two queue-group members to
// subject, each on a Conn of its own, for as long as ctx lasts.
func flow(t *testing.T, ctx context.Context, c *cluster, subject string) (fan, queue *tally) {
	t.Helper()
	fan, queue = newTally(), newTally()
	b := dial(t, c.url)
	t.Cleanup(func() { b.Close() })
	if _, err := b.Subscribe(ctx, subject, fan.add); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b := dial(t, c.url)
		t.Cleanup(func() { b.Close() })
		if _, err := b.QueueSubscribe(ctx, subject, "workers", queue.add); err != nil {
			t.Fatal(err)
		}
	}
	return fan, queue
}

// checkFlow waits up to deliveryWait for payloads 0..n-1 at the fan-out
// subscriber and the queue group "workers", then fails t unless each got
// them once, describing the group when it fell short.
func (c *cluster) checkFlow(t *testing.T, subject string, fan, queue *tally, n int) {
	t.Helper()
	until := time.Now().Add(deliveryWait)
	fan.check(t, until, "fan-out", n)
	if !queue.check(t, until, "queue group", n) {
		c.logGroup(t, subject, "workers")
	}
}

// logGroup logs what the cluster says of a queue group: its state, each
// member's partitions, and each partition's committed offset against its
// end and leader. After a failed check it tells a partition nobody was
// assigned from one whose member stopped reading or skipped ahead.
func (c *cluster) logGroup(t *testing.T, subject, group string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.TrimPrefix(c.url, "kafka://")))
	if err != nil {
		t.Logf("group %s: no client: %v", group, err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	id := bkafka.GroupID(subject, group)
	described, err := adm.DescribeGroups(ctx, id)
	if err != nil {
		t.Logf("group %s: describe: %v", id, err)
		return
	}
	for _, g := range described.Sorted() {
		t.Logf("group %s: state %s, protocol %s, %d members, err %v", g.Group, g.State, g.Protocol, len(g.Members), g.Err)
		for _, m := range g.Members {
			var parts []int32
			if a, ok := m.Assigned.AsConsumer(); ok {
				for _, at := range a.Topics {
					parts = append(parts, at.Partitions...)
				}
			}
			t.Logf("  member %s: partitions %v", m.MemberID, parts)
		}
	}
	committed, err := adm.FetchOffsets(ctx, id)
	if err != nil {
		t.Logf("group %s: committed offsets: %v", id, err)
	}
	ends, err := adm.ListEndOffsets(ctx, subject)
	if err != nil {
		t.Logf("group %s: end offsets: %v", id, err)
		return
	}
	for p := range int32(len(ends[subject])) {
		e, _ := ends.Lookup(subject, p)
		o, _ := committed.Lookup(subject, p)
		t.Logf("  partition %d: committed %d (epoch %d, err %v), end %d, leader %d",
			p, o.At, o.LeaderEpoch, o.Err, e.Offset, c.kc.LeaderFor(subject, p))
	}
}

// answerPastEpochs answers OffsetForLeaderEpoch as a broker without unclean
// leader elections does: the log was not truncated. After a leader change
// franz-go asks where the epoch it was reading ended (KIP-320); kfake
// answers "unknown epoch" until a batch of a later epoch is written, where
// a real broker answers with the offset the next epoch starts at, and
// franz-go then resets the partition to ConsumeResetOffset (its end),
// skipping what it had not read yet. A kfake answer of its own; the
// client's handling of a real truncation is not tested here.
func (c *cluster) answerPastEpochs() {
	c.kc.ControlKey(int16(kmsg.OffsetForLeaderEpoch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.kc.KeepControl()
		req := kreq.(*kmsg.OffsetForLeaderEpochRequest)
		res := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetForLeaderEpochResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				sp.Partition, sp.LeaderEpoch, sp.EndOffset = rp.Partition, rp.LeaderEpoch, math.MaxInt64
				st.Partitions = append(st.Partitions, sp)
			}
			res.Topics = append(res.Topics, st)
		}
		return res, nil, true
	})
}
