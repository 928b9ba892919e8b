package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Scheme is the URL scheme of a Kafka cluster:
// kafka://host1:9092,host2:9092?partitions=6. Credentials go in the URL,
// kafka://user:pass@host:9092?sasl=scram-sha-512; see the package comment
// for every option.
const Scheme = "kafka"

// TLSScheme is Scheme over TLS: kafkas://host:9093 (the same as
// kafka://host:9093?tls=true).
const TLSScheme = "kafkas"

func init() {
	broker.Register(Scheme, open)
	broker.Register(TLSScheme, open)
}

// Conn is a Broker on a Kafka cluster. It keeps a connection per broker for
// publishing, one per broker and subscription for reading, one per broker
// for metadata, and the coordinator connections of its consumer groups.
type Conn struct {
	cfg    *config
	logger *slog.Logger
	health *health
	cl     *cluster
	prod   *producer
	dialer *kafka.Dialer // for kafka-go's consumer groups

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
	done   chan struct{} // closed when Close starts
}

func open(ctx context.Context, u *url.URL, logger *slog.Logger) (broker.Broker, error) {
	return dial(ctx, u, logger)
}

// Dial connects to the Kafka cluster named by rawURL (kafka:// or
// kafkas://). It fails, naming each address and why, when no broker
// answers before ctx's deadline or 5 s, whichever is sooner; once
// connected, lost connections are retried forever with backoff. Errors
// never show the URL's password.
func Dial(ctx context.Context, rawURL string, logger *slog.Logger) (*Conn, error) {
	u, err := broker.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != Scheme && u.Scheme != TLSScheme {
		return nil, fmt.Errorf("broker URL %q: scheme is not %s or %s", broker.Redact(rawURL), Scheme, TLSScheme)
	}
	return dial(ctx, u, logger)
}

func dial(ctx context.Context, u *url.URL, logger *slog.Logger) (*Conn, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := parseConfig(u)
	if err != nil {
		return nil, err
	}
	timeout := defaultDialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	logger = logger.With(telemetry.KeyComponent, "broker."+Scheme)
	h := &health{logger: logger, down: map[string]bool{}}
	c := &Conn{
		cfg:    cfg,
		logger: logger,
		health: h,
		cl:     newCluster(cfg, h),
		subs:   map[*subscription]struct{}{},
		done:   make(chan struct{}),
		dialer: &kafka.Dialer{
			ClientID:      cfg.clientID,
			Timeout:       cfg.dialTimeout,
			DualStack:     true,
			TLS:           cfg.tls,
			SASLMechanism: cfg.sasl,
		},
	}
	c.prod = newProducer(c.cl, cfg, logger, h)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.cl.metadata(ctx, nil); err != nil {
		c.cl.close()
		c.prod.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w (gave up after %v)", err, timeout.Round(time.Millisecond))
		}
		return nil, err
	}
	h.arm()
	return c, nil
}

// MaxMessageBytes implements broker.SizeLimiter: the largest payload, from
// the URL's max_message_bytes (default 1 MiB). Topics busmesh creates accept
// a record batch holding one message this large.
func (c *Conn) MaxMessageBytes() int { return c.cfg.maxMessage }

// usable returns the error for an operation on a closed Conn or with a
// finished ctx.
func (c *Conn) usable(ctx context.Context) error {
	select {
	case <-c.done:
		return broker.ErrClosed
	default:
	}
	return ctx.Err()
}

// Publish implements broker.Broker. It returns once the message is queued
// for the partition leader's connection, without waiting for the broker:
// delivery is at most once. A message the broker refuses before writing it
// (its partition changed leader) is routed again; one lost with a
// connection is logged, not sent twice. The first Publish to a subject
// looks its topic up, creating it if need be. Publish blocks only while
// that broker's queue (32 MiB) is full, and returns ErrDisconnected instead
// when the broker is unreachable too.
func (c *Conn) Publish(ctx context.Context, subject string, data []byte) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	if len(data) > c.cfg.maxMessage {
		return fmt.Errorf("publish %s: %d bytes, limit %d: %w", subject, len(data), c.cfg.maxMessage, broker.ErrTooLarge)
	}
	t, err := c.cl.topic(ctx, subject)
	if err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	if err := c.prod.publish(ctx, c.done, t, data); err != nil {
		if err == broker.ErrClosed {
			return err
		}
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Close implements broker.Broker: it ends every subscription (queue group
// members commit their positions and leave their groups), sends what was
// published before it for up to 2 s, and closes the connections.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	subs := make([]*subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i, s := range subs {
		wg.Go(func() { errs[i] = s.Unsubscribe() })
	}
	wg.Wait()
	c.prod.close()
	c.cl.close()
	return errors.Join(errs...)
}

// Log keys this package adds to those of internal/telemetry.
const (
	keyGroup     = "group"
	keyCount     = "count"
	keyPartition = "partition"
	keyOffset    = "offset"
)

// Interface guards.
var (
	_ broker.Broker       = (*Conn)(nil)
	_ broker.SizeLimiter  = (*Conn)(nil)
	_ broker.Subscription = (*subscription)(nil)
)
