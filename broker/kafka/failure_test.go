package kafka_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
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
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
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
	fan.check(t, ctx, "fan-out", n)
	queue.check(t, ctx, "queue group", n)
}

// TestRetriableProduceErrors answers the first produce requests with
// NOT_ENOUGH_REPLICAS, an error after which the broker wrote nothing:
// franz-go sends the messages again.
func TestRetriableProduceErrors(t *testing.T) {
	c := startCluster(t)
	const subject = "retry.test"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
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
	fan.check(t, ctx, "fan-out", n)
	queue.check(t, ctx, "queue group", n)
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
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
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
	until := time.Now().Add(time.Second)
	c.kc.Control(func(kmsg.Request) (kmsg.Response, error, bool) {
		if time.Now().After(until) {
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
	fan.check(t, ctx, "fan-out", n)
	queue.check(t, ctx, "queue group", n)
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
