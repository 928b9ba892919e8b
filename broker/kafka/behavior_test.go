package kafka_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/busmesh/busmesh/broker"
)

// TestClientMetricsOption: franz-go asks the cluster for a KIP-714 client
// metrics subscription only with client_metrics=true.
func TestClientMetricsOption(t *testing.T) {
	c := startCluster(t)
	var asked atomic.Int32
	c.kc.ControlKey(int16(kmsg.GetTelemetrySubscriptions), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.kc.KeepControl()
		asked.Add(1)
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, on := range []bool{false, true} {
		b := dial(t, c.url+"?client_metrics="+strconv.FormatBool(on))
		if _, err := b.Subscribe(ctx, "metrics.test", func(context.Context, []byte) {}); err != nil {
			t.Fatal(err)
		}
		if on {
			waitUntil(t, 5*time.Second, "a request for a client metrics subscription", func() bool { return asked.Load() > 0 })
		} else {
			time.Sleep(time.Second)
			if n := asked.Load(); n != 0 {
				t.Fatalf("%d requests for a client metrics subscription by default, want none", n)
			}
		}
		b.Close()
	}
}

func TestMaxMessageBytesOption(t *testing.T) {
	c := startCluster(t)
	b := dial(t, c.url+"?max_message_bytes=4096&partitions=1")
	defer b.Close()
	if got := broker.MaxMessageBytes(b); got != 4096 {
		t.Fatalf("MaxMessageBytes() = %d, want 4096", got)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, "limit.test", make([]byte, 4097)); !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("Publish(4097 bytes) = %v, want ErrTooLarge", err)
	}
	got := make(chan int, 8)
	if _, err := b.Subscribe(ctx, "limit.test", func(_ context.Context, d []byte) { got <- len(d) }); err != nil {
		t.Fatal(err)
	}
	// Several at the limit for one partition (the topic has one), published
	// together: each needs a record batch of its own, or the topic's
	// max.message.bytes refuses them.
	for range 4 {
		if err := b.Publish(ctx, "limit.test", make([]byte, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		select {
		case n := <-got:
			if n != 4096 {
				t.Fatalf("got %d bytes, want 4096", n)
			}
		case <-ctx.Done():
			t.Fatal("messages at the size limit did not arrive")
		}
	}
}

// TestQueueGroupRebalance publishes without pause while members join and
// leave: every message reaches exactly one member, because a member commits
// where it stopped when a rebalance takes its partitions, and the next owner
// starts there.
func TestQueueGroupRebalance(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	seen := map[string]int{}
	handle := func(_ context.Context, d []byte) {
		mu.Lock()
		seen[string(d)]++
		mu.Unlock()
	}
	join := func() broker.Subscription {
		b := dial(t, c.url)
		t.Cleanup(func() { b.Close() })
		sub, err := b.QueueSubscribe(ctx, "rebalance.test", "workers", handle)
		if err != nil {
			t.Fatal(err)
		}
		return sub
	}
	first := join()
	pub := dial(t, c.url)
	defer pub.Close()
	n := 3000
	if testing.Short() {
		n = 1000
	}
	for i := range n {
		switch i {
		case n / 4:
			join()
		case n / 2:
			join()
		case 3 * n / 4:
			if err := first.Unsubscribe(); err != nil {
				t.Fatal(err)
			}
		}
		if err := pub.Publish(ctx, "rebalance.test", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond) // spread publishing over the rebalances
		}
	}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		sum := 0
		for _, k := range seen {
			sum += k
		}
		return sum
	}
	for total() < n && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // late duplicates would show now
	mu.Lock()
	defer mu.Unlock()
	var missing, dup int
	for i := range n {
		switch seen[strconv.Itoa(i)] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing != 0 || dup != 0 {
		t.Fatalf("%d messages published: %d missing, %d delivered more than once", n, missing, dup)
	}
}

// TestPublishWhileDown checks what Publish says while the cluster is gone:
// a subject seen before is buffered, a new one is ErrDisconnected.
func TestPublishWhileDown(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	b := dial(t, "kafka://"+kc.ListenAddrs()[0])
	defer b.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.Publish(ctx, "down.known", []byte("x")); err != nil {
		t.Fatal(err)
	}
	kc.Close()
	if err := b.Publish(ctx, "down.known", []byte("y")); err != nil {
		t.Errorf("Publish(known subject, broker down) = %v, want nil (buffered)", err)
	}
	if err := b.Publish(ctx, "down.new", []byte("z")); !errors.Is(err, broker.ErrDisconnected) {
		t.Errorf("Publish(new subject, broker down) = %v, want ErrDisconnected", err)
	}
	start := time.Now()
	b.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close with the broker down took %v", d)
	}
}

// TestCloseWithBrokerGone closes a Conn with a fan-out subscription, a
// queue-group member and an unsent message after the cluster went away:
// flushing and leaving the group are bounded, so Close does not wait for a
// broker that is not coming back.
func TestCloseWithBrokerGone(t *testing.T) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	b := dial(t, "kafka://"+kc.ListenAddrs()[0])
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan struct{}, 2)
	h := func(context.Context, []byte) { got <- struct{}{} }
	if _, err := b.QueueSubscribe(ctx, "gone.test", "g", h); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, "gone.test", h); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "gone.test", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-got
	<-got
	kc.Close()
	if err := b.Publish(ctx, "gone.test", []byte("never sent")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.Close()
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("Close with the broker gone took %v, want about 2s (flush and leave run side by side)", d)
	}
}

// TestCloseStopsEverything checks that Close leaves no goroutine of the
// Conn behind: its kgo clients (producer, fan-out reader, consumer group)
// and the goroutines that call the handlers.
func TestCloseStopsEverything(t *testing.T) {
	c := startCluster(t)
	before := runtime.NumGoroutine()
	b := dial(t, c.url)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := make(chan struct{}, 2)
	h := func(context.Context, []byte) { got <- struct{}{} }
	if _, err := b.Subscribe(ctx, "close.test", h); err != nil {
		t.Fatal(err)
	}
	if _, err := b.QueueSubscribe(ctx, "close.test", "g", h); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "close.test", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-got
	<-got
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// kfake's side of each connection ends a moment after ours.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLeaderChanges moves every partition to a random broker of three, a
// few times, while messages flow: publishers route again what the old
// leader refused, readers follow the partitions, and nothing is lost or
// doubled.
func TestLeaderChanges(t *testing.T) {
	c := startCluster(t, kfake.NumBrokers(3))
	c.answerPastEpochs()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute) // outlives deliveryWait
	defer cancel()
	fan, queue := newTally(), newTally()
	if _, err := dial(t, c.url).Subscribe(ctx, "leaders.test", fan.add); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b := dial(t, c.url)
		t.Cleanup(func() { b.Close() })
		if _, err := b.QueueSubscribe(ctx, "leaders.test", "workers", queue.add); err != nil {
			t.Fatal(err)
		}
	}
	pub := dial(t, c.url)
	defer pub.Close()
	n := 2000
	for i := range n {
		if i%500 == 250 {
			c.kc.ShufflePartitionLeaders()
		}
		if err := pub.Publish(ctx, "leaders.test", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	c.checkFlow(t, "leaders.test", fan, queue, n)
}

// tally counts what a handler receives, by payload.
type tally struct {
	mu   sync.Mutex
	seen map[string]int
	n    int
}

func newTally() *tally { return &tally{seen: map[string]int{}} }

func (ta *tally) add(_ context.Context, d []byte) {
	ta.mu.Lock()
	ta.seen[string(d)]++
	ta.n++
	ta.mu.Unlock()
}

// deliveryWait bounds how long a test waits for its messages once they are
// published. The subscriptions outlive it, so a test that gives up can
// still describe its group.
const deliveryWait = 45 * time.Second

// check waits for n messages (until the time given), then fails t unless
// payloads 0..n-1 each arrived once. It reports whether they did.
func (ta *tally) check(t *testing.T, until time.Time, what string, n int) bool {
	t.Helper()
	for {
		ta.mu.Lock()
		got := ta.n
		ta.mu.Unlock()
		if got >= n || time.Now().After(until) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // late duplicates would show now
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var missing, dup int
	for i := range n {
		switch ta.seen[strconv.Itoa(i)] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing != 0 || dup != 0 {
		t.Errorf("%s: %d messages published: %d missing, %d delivered more than once", what, n, missing, dup)
		return false
	}
	return true
}
