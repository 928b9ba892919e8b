package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/coalesce"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Scheme is the URL scheme of a NATS server: nats://host:4222 (tls:// for
// TLS). Credentials go in the URL: nats://user:pass@host:4222 or
// nats://token@host:4222; see securityOptions for a private CA, client
// certificates and NKeys.
const Scheme = "nats"

// EmbeddedScheme names the in-process NATS server, the zero-setup default:
// "embedded" listens on a free loopback port, "embedded://127.0.0.1:4222" on
// the given address, so that other sidecars can join it. A busmesh built
// with -tags nodev (the container image) has no server in it and refuses
// the scheme, saying so.
const EmbeddedScheme = "embedded"

// NoEmbedded says why a nodev build refuses the embedded broker, and
// NoEmbeddedFix what to do instead (HasEmbedded tells which build this is).
const (
	NoEmbedded    = "this busmesh was built with -tags nodev, as the container image is, and has no NATS server in it"
	NoEmbeddedFix = "set broker: nats://HOST:4222 (or BUSMESH_BROKER), or run a busmesh from go install ./cmd/busmesh"
)

func init() {
	broker.Register(Scheme, open)
	broker.Register("tls", open)
	broker.Register(EmbeddedScheme, openEmbedded)
}

// Conn is a Broker on one NATS connection.
type Conn struct {
	nc     *nats.Conn
	logger *slog.Logger
	// onClose runs after the connection is closed (the embedded server's
	// shutdown).
	onClose  func()
	embedded string // the URL of the embedded server this Conn started, if it did

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool

	// Returned messages: one subscription on returnPrefix+"*" receives the
	// server's "no responders" status for PublishReturnable messages.
	returnOnce   sync.Once
	returnErr    error
	returnPrefix string
	returned     atomic.Pointer[func(uint64)]
}

func open(ctx context.Context, u *url.URL, logger *slog.Logger) (broker.Broker, error) {
	raw, opts, err := securityOptions(u)
	if err != nil {
		return nil, err
	}
	return Dial(ctx, raw, logger, opts...)
}

// Dial connects to the NATS servers in rawURL (comma-separated URLs are a
// cluster). It fails when no server answers before ctx's deadline (at most
// 5 s); once connected, a lost connection is retried forever with backoff.
func Dial(ctx context.Context, rawURL string, logger *slog.Logger, opts ...nats.Option) (*Conn, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	c := &Conn{logger: logger, subs: map[*subscription]struct{}{}}
	redacted := broker.Redact(rawURL)
	all := append([]nats.Option{
		nats.Name("busmesh"),
		nats.Timeout(timeout),
		// Concurrent publishes share write system calls (internal/coalesce).
		nats.SetCustomDialer(&coalesce.Dialer{Dialer: net.Dialer{Timeout: timeout}}),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.ReconnectBufSize(32 << 20),
		nats.NoCallbacksAfterClientClose(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Warn("broker connection lost", telemetry.KeyBroker, redacted, telemetry.KeyErr, err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("broker reconnected", telemetry.KeyBroker, redacted)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			logger.Error("broker error", telemetry.KeySubject, subject, telemetry.KeyErr, err)
		}),
	}, opts...)
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(rawURL, all...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		c.nc = r.nc
		return c, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// reconnectDelay backs off from 100 ms to 1 s, with jitter so a fleet of
// sidecars does not reconnect in lock-step.
func reconnectDelay(attempts int) time.Duration {
	d := 100 * time.Millisecond << min(attempts, 4)
	d = min(d, time.Second)
	return d/2 + rand.N(d/2)
}

// NATS returns the connection, for what only NATS does (the NATS services
// protocol an adapter answers).
func (c *Conn) NATS() *nats.Conn { return c.nc }

// MaxMessageBytes returns the server's max_payload.
func (c *Conn) MaxMessageBytes() int { return int(c.nc.MaxPayload()) }

// Publish implements broker.Broker.
func (c *Conn) Publish(ctx context.Context, subject string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.mapErr(subject, c.nc.Publish(subject, data))
}

// PublishReturnable implements broker.Returner with NATS "no responders": the
// message carries a reply subject, and the server answers a 503 status to it
// when nobody is subscribed.
func (c *Conn) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.returnOnce.Do(func() { c.returnErr = c.startReturns(returned) })
	if c.returnErr != nil {
		return c.returnErr
	}
	var buf [64]byte
	reply := append(append(buf[:0], c.returnPrefix...), strconv.FormatUint(token, 36)...)
	return c.mapErr(subject, c.nc.PublishRequest(subject, string(reply), data))
}

func (c *Conn) startReturns(returned func(uint64)) error {
	c.returned.Store(&returned)
	c.returnPrefix = "_BMRET." + nats.NewInbox()[len(nats.InboxPrefix):] + "."
	_, err := c.nc.Subscribe(c.returnPrefix+"*", func(m *nats.Msg) {
		if len(m.Data) != 0 || m.Header.Get("Status") != "503" {
			return
		}
		token, err := strconv.ParseUint(m.Subject[len(c.returnPrefix):], 36, 64)
		if err != nil {
			return
		}
		(*c.returned.Load())(token)
	})
	if err != nil {
		return fmt.Errorf("subscribe to returns: %w", err)
	}
	return nil
}

func (c *Conn) mapErr(subject string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrConnectionClosed):
		return broker.ErrClosed
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("publish %s: %w", subject, broker.ErrTooLarge)
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("publish %s: %w", subject, broker.ErrDisconnected)
	}
	return fmt.Errorf("publish %s: %w", subject, err)
}

// Subscribe implements broker.Broker.
func (c *Conn) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	return c.subscribe(ctx, subject, "", h)
}

// Connected implements broker.Connectivity.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// QueueSubscribe implements broker.Broker with a NATS queue group.
func (c *Conn) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	return c.subscribe(ctx, subject, group, h)
}

func (c *Conn) subscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &subscription{conn: c, h: h}
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, broker.ErrClosed
	}
	c.subs[s] = struct{}{}
	c.mu.Unlock()

	var err error
	if group == "" {
		s.sub, err = c.nc.Subscribe(subject, s.deliver)
	} else {
		s.sub, err = c.nc.QueueSubscribe(subject, group, s.deliver)
	}
	if err == nil {
		// A busy handler lets messages wait here rather than be dropped as
		// a slow consumer; their deadlines bound how long they matter.
		err = s.sub.SetPendingLimits(-1, 256<<20)
	}
	if err == nil {
		// The subscription is active once the server has seen it.
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = c.nc.FlushWithContext(fctx)
		cancel()
	}
	if err != nil {
		_ = s.Unsubscribe() // the subscribe error is the one to report
		return nil, fmt.Errorf("subscribe %s: %w", subject, c.mapErr(subject, err))
	}
	s.stop = context.AfterFunc(ctx, func() { _ = s.Unsubscribe() })
	return s, nil
}

// Close implements broker.Broker.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	subs := make([]*subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	var errs []error
	for _, s := range subs {
		errs = append(errs, s.Unsubscribe())
	}
	// Flush what was published before Close, briefly.
	_ = c.nc.FlushTimeout(time.Second)
	c.nc.Close()
	if c.onClose != nil {
		c.onClose()
	}
	return errors.Join(errs...)
}

type subscription struct {
	conn   *Conn
	h      broker.Handler
	sub    *nats.Subscription
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool

	// mu is held while the handler runs, so Unsubscribe can wait for it.
	mu     sync.Mutex
	closed bool
}

func (s *subscription) deliver(m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.h(s.ctx, m.Data)
}

// Drain implements broker.Drainer: the NATS client hands this member's
// pending messages to the handler, then closes the subscription.
func (s *subscription) Drain(ctx context.Context) error {
	closed := s.sub.StatusChanged(nats.SubscriptionClosed)
	if err := s.sub.Drain(); err != nil {
		return errors.Join(fmt.Errorf("drain %s: %w", s.sub.Subject, err), s.Unsubscribe())
	}
	select {
	case <-closed:
	case <-ctx.Done():
	}
	return s.Unsubscribe()
}

// Unsubscribe implements broker.Subscription.
func (s *subscription) Unsubscribe() error {
	s.cancel()
	if s.stop != nil {
		s.stop()
	}
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return nil
	}
	s.conn.mu.Lock()
	delete(s.conn.subs, s)
	s.conn.mu.Unlock()
	if s.sub == nil {
		return nil
	}
	if err := s.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("unsubscribe %s: %w", s.sub.Subject, err)
	}
	return nil
}

// Interface guards.
var (
	_ broker.Drainer      = (*subscription)(nil)
	_ broker.Broker       = (*Conn)(nil)
	_ broker.Returner     = (*Conn)(nil)
	_ broker.SizeLimiter  = (*Conn)(nil)
	_ broker.Connectivity = (*Conn)(nil)
)
