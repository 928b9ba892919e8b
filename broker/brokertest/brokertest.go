// Package brokertest is the conformance suite every broker backend passes,
// against a real server. A backend's test file declares its Features and
// calls Run once per configuration:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Require(t, "nats", addr, "nats-server -p 4222")
//		brokertest.Run(t, brokertest.Features{Ordered: true}, func(t *testing.T) broker.Broker { ... })
//	}
//
// Every case stands alone: its own subjects, t.Parallel() unless it
// restarts the broker. Differences between brokers are declared in Features;
// the suite never branches on a backend's name. -short shrinks volumes, not
// the set of cases.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// Features declares what a backend's broker does differently.
type Features struct {
	// Ordered: messages from one publisher to one subscriber arrive in the
	// order they were published.
	Ordered bool

	// Returns: the backend implements broker.Returner.
	Returns bool

	// Restart, when set, drops every connection to the broker and lets it
	// come back (restarting the server or closing its connections). The
	// Reconnect case needs it.
	Restart func(t *testing.T)

	// Wait is how long the suite waits for an expected message; zero means
	// 10 s. Brokers that rebalance slowly set more.
	Wait time.Duration
}

// NewFunc opens a new connection to the broker under test. The suite closes
// it.
type NewFunc func(t *testing.T) broker.Broker

// Run runs every conformance case as a subtest of t.
func Run(t *testing.T, f Features, newBroker NewFunc) {
	if f.Wait == 0 {
		f.Wait = 10 * time.Second
	}
	s := &suite{f: f, newBroker: newBroker}
	cases := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"FanOut", s.fanOut},
		{"QueueGroupSpread", s.queueGroupSpread},
		{"QueueGroupsAreIndependent", s.queueGroupsIndependent},
		{"NoLossNoDuplicates", s.noLossNoDuplicates},
		{"LargeMessage", s.largeMessage},
		{"TooLarge", s.tooLarge},
		{"Unsubscribe", s.unsubscribe},
		{"UnsubscribeWaitsForHandler", s.unsubscribeWaitsForHandler},
		{"SubscribeContextCancel", s.subscribeContextCancel},
		{"PublishCanceledContext", s.publishCanceledContext},
		{"CloseWhilePublishing", s.closeWhilePublishing},
		{"ConcurrentPublishers", s.concurrentPublishers},
		{"SubjectIsolation", s.subjectIsolation},
		{"BlockedHandler", s.blockedHandler},
		{"LateSubscriber", s.lateSubscriber},
		{"Returns", s.returns},
		{"Drain", s.drain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t)
		})
	}
	// Reconnect restarts the broker, so it is not parallel: it runs alone,
	// before the parallel cases are released.
	t.Run("Reconnect", s.reconnect)
}

// Require skips t when nothing listens on addr, naming the command that
// starts the broker; when the CI environment variable is set it fails
// instead, because in CI an unreachable broker is a defect, not a reason to
// skip.
func Require(t testing.TB, name, addr, start string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		conn.Close()
		return
	}
	msg := fmt.Sprintf("%s is not reachable at %s (%v); start it with: %s", name, addr, err, start)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

type suite struct {
	f         Features
	newBroker NewFunc
}

var seq atomic.Int64

// subject returns a subject no other case or run uses.
func subject(t *testing.T, parts ...string) string {
	s := fmt.Sprintf("brokertest.%d-%d", time.Now().UnixNano(), seq.Add(1))
	for _, p := range parts {
		s += "." + p
	}
	return s
}

func (s *suite) open(t *testing.T) broker.Broker {
	t.Helper()
	b := s.newBroker(t)
	t.Cleanup(func() { b.Close() })
	return b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// inbox records what one subscription receives.
type inbox struct {
	mu   sync.Mutex
	got  [][]byte
	cond chan struct{} // signalled on every message
}

func newInbox() *inbox { return &inbox{cond: make(chan struct{}, 1)} }

func (in *inbox) handle(_ context.Context, data []byte) {
	in.mu.Lock()
	in.got = append(in.got, data)
	in.mu.Unlock()
	select {
	case in.cond <- struct{}{}:
	default:
	}
}

func (in *inbox) len() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.got)
}

func (in *inbox) messages() [][]byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([][]byte(nil), in.got...)
}

// waitFor waits until cond holds for the inboxes, or fails t after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *suite) volume(long, short int) int {
	if testing.Short() {
		return short
	}
	return long
}

func payload(i int) []byte { return fmt.Appendf(nil, "msg-%08d", i) }

func publishN(t *testing.T, ctx context.Context, b broker.Broker, subject string, n int) {
	t.Helper()
	for i := range n {
		if err := b.Publish(ctx, subject, payload(i)); err != nil {
			t.Fatalf("Publish(%d) = %v", i, err)
		}
	}
}

// checkExactlyOnce fails t unless got holds payload(0..n-1) once each.
func checkExactlyOnce(t *testing.T, got [][]byte, n int) {
	t.Helper()
	seen := make(map[string]int, n)
	for _, m := range got {
		seen[string(m)]++
	}
	var missing, dup int
	for i := range n {
		switch seen[string(payload(i))] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing != 0 || dup != 0 || len(got) != n {
		t.Fatalf("received %d messages for %d published: %d missing, %d duplicated", len(got), n, missing, dup)
	}
}

func (s *suite) fanOut(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	subs := make([]*inbox, 3)
	for i := range subs {
		subs[i] = newInbox()
		if _, err := b.Subscribe(ctx, subj, subs[i].handle); err != nil {
			t.Fatalf("Subscribe = %v", err)
		}
	}
	const n = 100
	publishN(t, ctx, s.open(t), subj, n)
	for i, in := range subs {
		waitFor(t, s.f.Wait, fmt.Sprintf("subscriber %d to get %d messages", i, n), func() bool { return in.len() >= n })
		checkExactlyOnce(t, in.messages(), n)
	}
}

func (s *suite) queueGroupSpread(t *testing.T) {
	ctx := testCtx(t)
	subj := subject(t)
	members := make([]*inbox, 3)
	for i := range members {
		members[i] = newInbox()
		// Each member on its own connection, as separate adapters are.
		if _, err := s.open(t).QueueSubscribe(ctx, subj, "workers", members[i].handle); err != nil {
			t.Fatalf("QueueSubscribe = %v", err)
		}
	}
	n := s.volume(3000, 600)
	publishN(t, ctx, s.open(t), subj, n)
	total := func() int {
		sum := 0
		for _, m := range members {
			sum += m.len()
		}
		return sum
	}
	waitFor(t, s.f.Wait, fmt.Sprintf("%d messages over the group", n), func() bool { return total() >= n })
	// Late duplicates would show up now.
	time.Sleep(100 * time.Millisecond)
	var all [][]byte
	for i, m := range members {
		got := m.len()
		t.Logf("member %d got %d of %d", i, got, n)
		if got < n/6 {
			t.Errorf("member %d got %d of %d messages, want at least %d (a rough third)", i, got, n, n/6)
		}
		all = append(all, m.messages()...)
	}
	checkExactlyOnce(t, all, n)
}

func (s *suite) queueGroupsIndependent(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	a, c := newInbox(), newInbox()
	if _, err := b.QueueSubscribe(ctx, subj, "group-a", a.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := b.QueueSubscribe(ctx, subj, "group-c", c.handle); err != nil {
		t.Fatal(err)
	}
	const n = 50
	publishN(t, ctx, b, subj, n)
	for name, in := range map[string]*inbox{"group-a": a, "group-c": c} {
		waitFor(t, s.f.Wait, name+" to get every message", func() bool { return in.len() >= n })
		checkExactlyOnce(t, in.messages(), n)
	}
}

func (s *suite) noLossNoDuplicates(t *testing.T) {
	ctx := testCtx(t)
	subj := subject(t)
	in := newInbox()
	if _, err := s.open(t).Subscribe(ctx, subj, in.handle); err != nil {
		t.Fatal(err)
	}
	n := s.volume(10000, 2000)
	publishN(t, ctx, s.open(t), subj, n)
	waitFor(t, s.f.Wait, fmt.Sprintf("%d messages", n), func() bool { return in.len() >= n })
	time.Sleep(100 * time.Millisecond)
	got := in.messages()
	checkExactlyOnce(t, got, n)
	if s.f.Ordered {
		for i, m := range got {
			if want := payload(i); string(m) != string(want) {
				t.Fatalf("message %d = %q, want %q (Features.Ordered)", i, m, want)
			}
		}
	}
}

// largeSize is the size the LargeMessage case sends: 4 MiB, or the broker's
// limit when that is lower.
func largeSize(b broker.Broker) int { return min(4<<20, broker.MaxMessageBytes(b)) }

func (s *suite) largeMessage(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	in := newInbox()
	if _, err := s.open(t).Subscribe(ctx, subj, in.handle); err != nil {
		t.Fatal(err)
	}
	size := largeSize(b)
	t.Logf("message size %d bytes (broker limit %d)", size, broker.MaxMessageBytes(b))
	msgs := make([][]byte, 3)
	for i := range msgs {
		msgs[i] = make([]byte, size)
		for j := range msgs[i] {
			msgs[i][j] = byte(j*7 + i)
		}
		if err := b.Publish(ctx, subj, msgs[i]); err != nil {
			t.Fatalf("Publish(%d bytes) = %v", size, err)
		}
	}
	waitFor(t, s.f.Wait, "3 large messages", func() bool { return in.len() >= 3 })
	got := in.messages()
	for i := range msgs {
		found := false
		for _, m := range got {
			if string(m) == string(msgs[i]) {
				found = true
			}
		}
		if !found {
			t.Errorf("large message %d did not arrive byte-exact", i)
		}
	}
}

func (s *suite) tooLarge(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	limit := broker.MaxMessageBytes(b)
	if limit >= 64<<20 {
		t.Skipf("broker limit %d bytes is too large to exceed in a test", limit)
	}
	subj := subject(t)
	err := b.Publish(ctx, subj, make([]byte, limit+1))
	if !errors.Is(err, broker.ErrTooLarge) {
		t.Fatalf("Publish(limit+1 = %d bytes) = %v, want ErrTooLarge", limit+1, err)
	}
	// The connection still works.
	in := newInbox()
	if _, err := b.Subscribe(ctx, subj, in.handle); err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, b, subj, 1)
	waitFor(t, s.f.Wait, "a message after ErrTooLarge", func() bool { return in.len() >= 1 })
}

func (s *suite) unsubscribe(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	gone, witness := newInbox(), newInbox()
	sub, err := b.Subscribe(ctx, subj, gone.handle)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, subj, witness.handle); err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, b, subj, 1)
	waitFor(t, s.f.Wait, "first message", func() bool { return gone.len() == 1 && witness.len() == 1 })
	if err := sub.Unsubscribe(); err != nil {
		t.Fatalf("Unsubscribe = %v", err)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatalf("second Unsubscribe = %v, want nil (idempotent)", err)
	}
	publishN(t, ctx, b, subj, 10)
	// The witness getting all ten means the broker delivered them; the
	// unsubscribed handler must not have seen any.
	waitFor(t, s.f.Wait, "witness to get 10 more", func() bool { return witness.len() == 11 })
	time.Sleep(50 * time.Millisecond)
	if n := gone.len(); n != 1 {
		t.Fatalf("unsubscribed handler got %d messages, want 1", n)
	}
}

func (s *suite) unsubscribeWaitsForHandler(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	entered := make(chan struct{})
	var returned atomic.Bool
	sub, err := b.Subscribe(ctx, subj, func(hctx context.Context, _ []byte) {
		close(entered)
		<-hctx.Done() // Unsubscribe must cancel the handler's context.
		time.Sleep(20 * time.Millisecond)
		returned.Store(true)
	})
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, b, subj, 1)
	select {
	case <-entered:
	case <-time.After(s.f.Wait):
		t.Fatal("handler not called")
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if !returned.Load() {
		t.Fatal("Unsubscribe returned before the running handler did")
	}
}

func (s *suite) subscribeContextCancel(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	subCtx, cancel := context.WithCancel(ctx)
	gone, witness := newInbox(), newInbox()
	var handlerCtx atomic.Pointer[context.Context]
	if _, err := b.Subscribe(subCtx, subj, func(hctx context.Context, data []byte) {
		handlerCtx.Store(&hctx)
		gone.handle(hctx, data)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, subj, witness.handle); err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, b, subj, 1)
	waitFor(t, s.f.Wait, "first message", func() bool { return gone.len() == 1 && witness.len() == 1 })
	cancel()
	waitFor(t, s.f.Wait, "handler context to end", func() bool { return (*handlerCtx.Load()).Err() != nil })
	publishN(t, ctx, b, subj, 10)
	waitFor(t, s.f.Wait, "witness to get 10 more", func() bool { return witness.len() == 11 })
	time.Sleep(50 * time.Millisecond)
	if n := gone.len(); n != 1 {
		t.Fatalf("handler of a cancelled subscription got %d messages, want 1", n)
	}
}

func (s *suite) publishCanceledContext(t *testing.T) {
	b := s.open(t)
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if err := b.Publish(ctx, subject(t), payload(0)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish(cancelled ctx) = %v, want context.Canceled", err)
	}
	if _, err := b.Subscribe(ctx, subject(t), newInbox().handle); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe(cancelled ctx) = %v, want context.Canceled", err)
	}
}

func (s *suite) closeWhilePublishing(t *testing.T) {
	ctx := testCtx(t)
	b := s.newBroker(t)
	subj := subject(t)
	if _, err := b.Subscribe(ctx, subj, newInbox().handle); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	var published atomic.Int64
	for range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				if err := b.Publish(ctx, subj, payload(i)); err != nil {
					errs <- err
					return
				}
				published.Add(1)
			}
		})
	}
	waitFor(t, s.f.Wait, "publishing to start", func() bool { return published.Load() > 100 })
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v", err)
		}
	case <-time.After(s.f.Wait):
		t.Fatal("Close did not return while publishers were running")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(s.f.Wait):
		t.Fatal("publishers still running after Close")
	}
	close(errs)
	for err := range errs {
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("Publish after Close = %v, want ErrClosed", err)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := b.Subscribe(ctx, subj, newInbox().handle); !errors.Is(err, broker.ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

func (s *suite) concurrentPublishers(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	in := newInbox()
	if _, err := s.open(t).Subscribe(ctx, subj, in.handle); err != nil {
		t.Fatal(err)
	}
	const publishers = 8
	per := s.volume(500, 100)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Go(func() {
			for i := range per {
				if err := b.Publish(ctx, subj, payload(p*per+i)); err != nil {
					t.Errorf("Publish = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	n := publishers * per
	waitFor(t, s.f.Wait, fmt.Sprintf("%d messages", n), func() bool { return in.len() >= n })
	time.Sleep(50 * time.Millisecond)
	checkExactlyOnce(t, in.messages(), n)
}

func (s *suite) subjectIsolation(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	base := subject(t)
	a, c := newInbox(), newInbox()
	if _, err := b.Subscribe(ctx, base+".a", a.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, base+".c", c.handle); err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, b, base+".c", 5)
	publishN(t, ctx, b, base+".a", 1)
	waitFor(t, s.f.Wait, "messages on both subjects", func() bool { return a.len() >= 1 && c.len() >= 5 })
	time.Sleep(50 * time.Millisecond)
	if a.len() != 1 || c.len() != 5 {
		t.Fatalf("subject a got %d (want 1), subject c got %d (want 5)", a.len(), c.len())
	}
}

// blockedHandler: a handler that blocks holds back its own subscription
// only: another subscription to the same subject and one to another
// subject on the same connection go on receiving, and once the handler
// returns, its subscription receives everything it was sent, once. The
// messages are large enough (2.5 MiB in all) for a backend to have to hold
// back what it cannot queue.
func (s *suite) blockedHandler(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj, other := subject(t, "blocked"), subject(t, "other")
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	blocked, same, elsewhere := newInbox(), newInbox(), newInbox()
	if _, err := b.Subscribe(ctx, subj, func(hctx context.Context, data []byte) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-hctx.Done():
		}
		blocked.handle(hctx, data)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, subj, same.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, other, elsewhere.handle); err != nil {
		t.Fatal(err)
	}
	const n, size = 40, 64 << 10
	big := func(i int) []byte { return append(payload(i), bytes.Repeat([]byte{'x'}, size)...) }
	pub := s.open(t)
	for i := range n {
		if err := pub.Publish(ctx, subj, big(i)); err != nil {
			t.Fatalf("Publish(%d) = %v", i, err)
		}
	}
	select {
	case <-entered:
	case <-time.After(s.f.Wait):
		t.Fatal("handler not called")
	}
	publishN(t, ctx, pub, other, n)
	waitFor(t, s.f.Wait, fmt.Sprintf("%d messages on the blocked subject's other subscription and %d on another subject", n, n),
		func() bool { return same.len() >= n && elsewhere.len() >= n })
	close(release)
	waitFor(t, s.f.Wait, fmt.Sprintf("the blocked subscription to get %d messages", n), func() bool { return blocked.len() >= n })
	time.Sleep(50 * time.Millisecond)
	for name, in := range map[string]*inbox{"blocked": blocked, "same subject": same} {
		got := in.messages()
		for i := range got {
			got[i] = bytes.TrimRight(got[i], "x")
		}
		t.Run(name, func(t *testing.T) { checkExactlyOnce(t, got, n) })
	}
	checkExactlyOnce(t, elsewhere.messages(), n)
}

// lateSubscriber: a second subscription to a subject already subscribed on
// the same connection receives what is published after it subscribed, not
// what was before.
func (s *suite) lateSubscriber(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	first, late := newInbox(), newInbox()
	if _, err := b.Subscribe(ctx, subj, first.handle); err != nil {
		t.Fatal(err)
	}
	publishN(t, ctx, b, subj, 5)
	waitFor(t, s.f.Wait, "5 messages", func() bool { return first.len() >= 5 })
	if _, err := b.Subscribe(ctx, subj, late.handle); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, subj, []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s.f.Wait, "the message published after the late subscription", func() bool { return late.len() >= 1 && first.len() >= 6 })
	time.Sleep(50 * time.Millisecond)
	if got := late.messages(); len(got) != 1 || string(got[0]) != "after" {
		t.Fatalf("late subscription got %q, want only \"after\"", got)
	}
}

func (s *suite) returns(t *testing.T) {
	b := s.open(t)
	r, ok := b.(broker.Returner)
	if !s.f.Returns {
		if ok {
			t.Fatal("backend implements broker.Returner but Features.Returns is false")
		}
		t.Skip("Features.Returns is false: the broker cannot report unroutable messages")
	}
	if !ok {
		t.Fatal("Features.Returns is true but the backend does not implement broker.Returner")
	}
	ctx := testCtx(t)
	returned := make(chan uint64, 16)
	onReturn := func(token uint64) { returned <- token }

	// Nobody listens: the message comes back with its token.
	if err := r.PublishReturnable(ctx, subject(t), payload(0), 42, onReturn); err != nil {
		t.Fatalf("PublishReturnable = %v", err)
	}
	select {
	case tok := <-returned:
		if tok != 42 {
			t.Fatalf("returned token = %d, want 42", tok)
		}
	case <-time.After(s.f.Wait):
		t.Fatal("message to a subject with no subscriber was not returned")
	}

	// A queue group listens: the message is delivered, not returned.
	subj := subject(t)
	in := newInbox()
	if _, err := s.open(t).QueueSubscribe(ctx, subj, "g", in.handle); err != nil {
		t.Fatal(err)
	}
	if err := r.PublishReturnable(ctx, subj, payload(1), 43, onReturn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s.f.Wait, "delivery", func() bool { return in.len() == 1 })
	// A return, if wrongly sent, would arrive about as fast as the delivery.
	select {
	case tok := <-returned:
		t.Fatalf("delivered message was also returned (token %d)", tok)
	case <-time.After(200 * time.Millisecond):
	}
}

func (s *suite) reconnect(t *testing.T) {
	if s.f.Restart == nil {
		t.Skip("Features.Restart is not set: this configuration cannot drop its broker connections")
	}
	ctx := testCtx(t)
	b := s.open(t)
	fan, queue := newInbox(), newInbox()
	subj := subject(t)
	if _, err := b.Subscribe(ctx, subj, fan.handle); err != nil {
		t.Fatal(err)
	}
	if _, err := b.QueueSubscribe(ctx, subj, "g", queue.handle); err != nil {
		t.Fatal(err)
	}
	pub := s.open(t)
	publishN(t, ctx, pub, subj, 1)
	waitFor(t, s.f.Wait, "a message before the restart", func() bool { return fan.len() == 1 && queue.len() == 1 })

	s.f.Restart(t)

	// Publish until both subscriptions hear again: the backend must recover
	// its connection and subscriptions on its own.
	deadline := time.Now().Add(max(30*time.Second, 3*s.f.Wait))
	for i := 1; fan.len() < 2 || queue.len() < 2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no delivery after the broker came back: fan-out got %d, queue got %d", fan.len(), queue.len())
		}
		_ = pub.Publish(ctx, subj, payload(i)) // errors while reconnecting are expected
		time.Sleep(100 * time.Millisecond)
	}
}

// drain checks broker.Drainer, on subscriptions that implement it: what
// was delivered to a member before Drain still reaches its handler.
func (s *suite) drain(t *testing.T) {
	ctx := testCtx(t)
	b := s.open(t)
	subj := subject(t)
	in := newInbox()
	sub, err := b.QueueSubscribe(ctx, subj, "g", func(hctx context.Context, data []byte) {
		time.Sleep(time.Millisecond) // a busy member: messages wait for it
		in.handle(hctx, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	d, ok := sub.(broker.Drainer)
	if !ok {
		t.Skip("the subscription is not a broker.Drainer (its Unsubscribe gives undelivered messages back)")
	}
	// A fan-out witness on the same subject: once it has every message, the
	// broker has handed every message to the member too.
	witness := newInbox()
	if _, err := b.Subscribe(ctx, subj, witness.handle); err != nil {
		t.Fatal(err)
	}
	const n = 200
	publishN(t, ctx, s.open(t), subj, n)
	waitFor(t, s.f.Wait, "the witness to get every message", func() bool { return witness.len() == n })
	if in.len() == n {
		t.Log("the member handled everything before Drain; the case proves less than it could")
	}
	if err := d.Drain(ctx); err != nil {
		t.Fatalf("Drain = %v", err)
	}
	if got := in.len(); got != n {
		t.Fatalf("after Drain the handler had %d of %d messages delivered to it", got, n)
	}
}
