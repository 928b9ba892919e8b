package kafka_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/busmesh/busmesh/broker"
)

// TestConnectivity takes the cluster away (every connection cut, new ones
// refused, as a stopped broker would) and brings it back: Connected turns
// false within about a second and true again once a broker answers, and
// messages flow again.
func TestConnectivity(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := dial(t, c.url)
	defer b.Close()
	got := newTally()
	// A subscription's long poll is what notices the loss first, as in a
	// sidecar, which always has its inbox and discovery subscriptions.
	if _, err := b.Subscribe(ctx, "health.test", got.add); err != nil {
		t.Fatal(err)
	}
	if !broker.Connected(b) {
		t.Fatal("Connected() = false on a fresh connection")
	}
	for round := range 2 {
		c.down()
		lost := time.Now()
		waitUntil(t, 5*time.Second, "Connected() to turn false", func() bool { return !broker.Connected(b) })
		took := time.Since(lost)
		t.Logf("round %d: disconnected reported after %v", round, took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("disconnected reported after %v, want about a second", took)
		}
		time.Sleep(500 * time.Millisecond)
		if broker.Connected(b) {
			t.Fatal("Connected() = true while the cluster is still away")
		}
		c.up()
		back := time.Now()
		waitUntil(t, 5*time.Second, "Connected() to turn true", func() bool { return broker.Connected(b) })
		t.Logf("round %d: connected reported after %v", round, time.Since(back).Round(time.Millisecond))
	}
	for i := 0; got.count() == 0; i++ {
		if ctx.Err() != nil {
			t.Fatal("no message after the cluster came back")
		}
		_ = b.Publish(ctx, "health.test", []byte(strconv.Itoa(i)))
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLostAgainDuringTopicCheck: when the cluster comes back, the Conn
// checks the topics it uses; if the cluster is lost again while that check
// waits for an answer, the loss is still reported as any other (here:
// connections cut and new ones held unanswered, so after slowFor of probes
// without an answer), not once the check gives up. The check ran on the
// health watcher, which then noticed the loss only after the check's
// request timeout (10 s; 3.7 s in CI, where the cluster refused dials). The
// cluster holds the check's metadata request, and every other one naming
// topics, until it is gone again.
func TestLostAgainDuringTopicCheck(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := dial(t, c.url)
	defer b.Close()
	if _, err := b.Subscribe(ctx, "recheck.test", newTally().add); err != nil {
		t.Fatal(err)
	}
	c.down()
	waitUntil(t, 5*time.Second, "Connected() to turn false", func() bool { return !broker.Connected(b) })
	held, release := make(chan struct{}), make(chan struct{})
	var heldOnce, releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	c.kc.ControlKey(int16(kmsg.Metadata), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.kc.KeepControl()
		select {
		case <-release:
			return nil, nil, false
		default:
		}
		// The probes name no topic; the check names the topics in use.
		if len(req.(*kmsg.MetadataRequest).Topics) > 0 {
			heldOnce.Do(func() { close(held) })
			c.kc.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	c.up()
	waitUntil(t, 5*time.Second, "Connected() to turn true", func() bool { return broker.Connected(b) })
	select {
	case <-held:
	case <-time.After(5 * time.Second):
		t.Fatal("no metadata request naming topics after the cluster came back: the case proved nothing")
	}
	c.silence()
	c.cut(t)
	lost := time.Now()
	releaseOnce.Do(func() { close(release) })
	waitUntil(t, 20*time.Second, "Connected() to turn false", func() bool { return !broker.Connected(b) })
	// slowFor (2 s) of probes, each up to probeTimeout: about 2.75 s
	// (and 12.75 s when the check holds up the watcher).
	if took := time.Since(lost); took > 8*time.Second {
		t.Errorf("lost again during the topic check: disconnected reported after %v, want about 3s", took.Round(time.Millisecond))
	} else {
		t.Logf("lost again during the topic check: disconnected reported after %v", took.Round(time.Millisecond))
	}
}

// TestDeliveryTime: a Kafka connection tells how long its messages may
// take (broker.Latent), so that an adapter leaving keeps taking calls that
// long.
func TestDeliveryTime(t *testing.T) {
	b := dial(t, startCluster(t).url)
	defer b.Close()
	if got := broker.DeliveryTime(b); got != time.Second {
		t.Errorf("DeliveryTime = %v, want 1s", got)
	}
}

// TestSlowClusterStaysConnected makes the cluster answer every metadata
// request a second late for 0.8 s, after dropping every connection: the
// probes time out, but a cluster that answers slowly is not a lost one,
// and Connected stays true.
func TestSlowClusterStaysConnected(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := dial(t, c.url)
	defer b.Close()
	got := newTally()
	if _, err := b.Subscribe(ctx, "slow.test", got.add); err != nil {
		t.Fatal(err)
	}
	// The subscription is fetching once a message arrives: its long poll
	// notices the cut.
	if err := b.Publish(ctx, "slow.test", []byte("0")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the first message", func() bool { return got.count() == 1 })
	var slowed atomic.Int32
	until := time.Now().Add(800 * time.Millisecond)
	c.kc.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		if time.Now().After(until) {
			c.kc.DropControl()
			return nil, nil, false
		}
		c.kc.KeepControl()
		slowed.Add(1)
		time.Sleep(time.Second)
		return nil, nil, false
	})
	c.cut(t)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !broker.Connected(b) {
			t.Fatal("Connected() = false while the cluster answered slowly")
		}
	}
	if slowed.Load() == 0 {
		t.Fatal("no metadata request was slowed: the case proved nothing")
	}
}

// TestUnsubscribeWhileSilent: with the cluster silent (nothing answered,
// nothing closed, as in a network partition) for long enough that
// franz-go's metadata loop waits on a request, ending a fan-out
// subscription and closing the Conn do not wait for the cluster. (Ending
// one through franz-go's PurgeTopicsFromConsuming, which waits for that
// loop, took 70 s, and held up every other subscription meanwhile.)
func TestUnsubscribeWhileSilent(t *testing.T) {
	c := startCluster(t)
	b := dial(t, c.url+"?partitions=1")
	ctx := t.Context()
	got := newTally()
	var subs []broker.Subscription
	for _, subject := range []string{"silent.a", "silent.b"} {
		s, err := b.Subscribe(ctx, subject, got.add)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	if err := b.Publish(ctx, "silent.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the first message", func() bool { return got.count() == 1 })
	c.silence()
	time.Sleep(11 * time.Second)
	for _, step := range []struct {
		name  string
		do    func() error
		limit time.Duration
	}{
		{"Unsubscribe", subs[0].Unsubscribe, 5 * time.Second},
		{"Close", b.Close, 10 * time.Second}, // it gives unsent messages 2 s
	} {
		start := time.Now()
		done := make(chan struct{})
		go func() { _ = step.do(); close(done) }()
		select {
		case <-done:
			t.Logf("%s with the cluster silent took %v", step.name, time.Since(start).Round(time.Millisecond))
		case <-time.After(step.limit):
			t.Fatalf("%s with the cluster silent: still waiting after %v", step.name, step.limit)
		}
	}
}

// TestClusterRestartedEmpty stops the cluster and starts a new, empty one
// on the same port: the Conns recreate their topics and resume their
// fan-out subscriptions, queue groups and inboxes on them, so messages flow
// again within seconds, without new Conns.
func TestClusterRestartedEmpty(t *testing.T) {
	k := startFixedCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const (
		fanSubject   = "restart.fan"
		queueSubject = "restart.queue"
		inboxSubject = "busmesh.test.inbox.sidecar-1"
	)
	sub := dial(t, k.url())
	defer sub.Close()
	members := dial(t, k.url())
	defer members.Close()
	pub := dial(t, k.url())
	defer pub.Close()
	fan, queue, inbox := newTally(), newTally(), newTally()
	if _, err := sub.Subscribe(ctx, fanSubject, fan.add); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Subscribe(ctx, inboxSubject, inbox.add); err != nil {
		t.Fatal(err)
	}
	for _, b := range []broker.Broker{sub, members} {
		if _, err := b.QueueSubscribe(ctx, queueSubject, "workers", queue.add); err != nil {
			t.Fatal(err)
		}
	}
	flowing := func(what string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		n0 := [3]int{fan.count(), queue.count(), inbox.count()}
		for i := 0; fan.count() == n0[0] || queue.count() == n0[1] || inbox.count() == n0[2]; i++ {
			if time.Since(start) > limit {
				t.Fatalf("%s: no delivery within %v: fan-out %d, queue group %d, inbox %d new messages", what, limit,
					fan.count()-n0[0], queue.count()-n0[1], inbox.count()-n0[2])
			}
			for _, s := range []string{fanSubject, queueSubject, inboxSubject} {
				_ = pub.Publish(ctx, s, []byte(what+strconv.Itoa(i)))
			}
			time.Sleep(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	flowing("before", 10*time.Second)
	for round := range 2 {
		k.restart(time.Second)
		took := flowing("after restart "+strconv.Itoa(round), 15*time.Second)
		t.Logf("round %d: every subscription delivering %v after the new cluster started", round, took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("round %d: delivery resumed after %v, want within 5s", round, took)
		}
		for _, b := range []broker.Broker{sub, members, pub} {
			if !broker.Connected(b) {
				t.Errorf("round %d: Connected() = false with the cluster back and delivering", round)
			}
		}
	}
	// A new subscriber and group member on the restarted cluster work too.
	late := newTally()
	if _, err := members.QueueSubscribe(ctx, queueSubject, "late", late.add); err != nil {
		t.Fatal(err)
	}
	for i := 0; late.count() == 0; i++ {
		if ctx.Err() != nil {
			t.Fatal("a group joined after the restart got nothing")
		}
		_ = pub.Publish(ctx, queueSubject, []byte("late"+strconv.Itoa(i)))
		time.Sleep(50 * time.Millisecond)
	}
}

// fixedCluster is a kfake cluster on a port of its own that can be
// restarted empty on the same port.
type fixedCluster struct {
	t    *testing.T
	port int
	mu   sync.Mutex
	kc   *kfake.Cluster
}

func startFixedCluster(t *testing.T) *fixedCluster {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k := &fixedCluster{t: t, port: l.Addr().(*net.TCPAddr).Port}
	l.Close()
	k.start()
	t.Cleanup(func() {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.kc.Close()
	})
	return k
}

func (k *fixedCluster) url() string { return "kafka://127.0.0.1:" + strconv.Itoa(k.port) }

func (k *fixedCluster) start() {
	k.t.Helper()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(k.port))
	if err != nil {
		k.t.Fatal(err)
	}
	k.mu.Lock()
	k.kc = kc
	k.mu.Unlock()
}

// restart closes the cluster and, after down, starts an empty one.
func (k *fixedCluster) restart(down time.Duration) {
	k.mu.Lock()
	k.kc.Close()
	k.mu.Unlock()
	time.Sleep(down)
	k.start()
}

func (c *cluster) down() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.proxies {
		p.Down()
	}
}

func (c *cluster) up() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.proxies {
		p.Up()
	}
}

func (ta *tally) count() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.n
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
