package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
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

// metadataTTL bounds the age of kafka-go's cached cluster layout, which
// routes every request: the Transport refreshes it at random intervals up
// to this long, and there is no other way to make it look again.
const metadataTTL = time.Second

func init() {
	broker.Register(Scheme, open)
	broker.Register(TLSScheme, open)
}

// Conn is a Broker on a Kafka cluster. One kafka-go Client and Transport
// carry its produce, fetch, metadata, offset and topic requests; its
// consumer groups are kafka-go ConsumerGroups on a Dialer with the same
// TLS and SASL settings.
type Conn struct {
	cfg    *config
	logger *slog.Logger
	tr     *kafka.Transport
	cl     *kafka.Client
	dialer *kafka.Dialer // for kafka-go's consumer groups
	topics *topics
	prod   *producer

	stop context.CancelFunc // the Transport's goroutines

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
	done   chan struct{} // closed when Close starts
}

func open(ctx context.Context, u *url.URL, logger *slog.Logger) (broker.Broker, error) {
	return dial(ctx, u, logger)
}

// Dial connects to the Kafka cluster named by rawURL (kafka:// or
// kafkas://). It fails, naming the addresses and why, when no broker
// answers before ctx's deadline or 5 s, whichever is sooner. Errors never
// show the URL's password.
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
	timeout := cfg.dialTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, context.DeadlineExceeded
	}
	logger = logger.With(telemetry.KeyComponent, "broker."+Scheme)
	trCtx, stop := context.WithCancel(context.Background())
	tr := &kafka.Transport{
		DialTimeout: cfg.dialTimeout,
		MetadataTTL: metadataTTL,
		ClientID:    cfg.clientID,
		TLS:         cfg.tls,
		SASL:        cfg.sasl,
		Context:     trCtx,
	}
	c := &Conn{
		cfg:    cfg,
		logger: logger,
		tr:     tr,
		cl:     &kafka.Client{Addr: kafka.TCP(cfg.addrs...), Transport: tr},
		dialer: &kafka.Dialer{
			ClientID:      cfg.clientID,
			Timeout:       cfg.dialTimeout,
			DualStack:     true,
			TLS:           cfg.tls,
			SASLMechanism: cfg.sasl,
		},
		stop: stop,
		subs: map[*subscription]struct{}{},
		done: make(chan struct{}),
	}
	c.topics = newTopics(cfg, c.cl)
	c.prod = newProducer(c)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The Transport's first metadata request, which also dials,
	// authenticates and negotiates versions; it answers later ones from
	// its cache.
	if _, err := c.cl.Metadata(pctx, &kafka.MetadataRequest{}); err != nil {
		c.closeTransport()
		if pctx.Err() != nil {
			err = fmt.Errorf("%w (gave up after %v)", err, timeout.Round(time.Millisecond))
		}
		return nil, fmt.Errorf("no broker of %s answered: %w", strings.Join(cfg.addrs, ","), err)
	}
	return c, nil
}

func (c *Conn) closeTransport() {
	c.stop()
	c.tr.CloseIdleConnections()
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

// Publish implements broker.Broker. It queues the message for a partition
// of the subject's topic (round-robin) and returns without waiting for the
// broker: the partition's sender writes it at once, or with the next
// produce request if one is in flight. The first Publish to a subject
// creates its topic if need be. Publish blocks only while 32 MiB wait to be
// sent.
func (c *Conn) Publish(ctx context.Context, subject string, data []byte) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	if len(data) > c.cfg.maxMessage {
		return fmt.Errorf("publish %s: %d bytes, limit %d: %w", subject, len(data), c.cfg.maxMessage, broker.ErrTooLarge)
	}
	t, err := c.topics.ensure(ctx, subject)
	if err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return c.prod.publish(ctx, t, data)
}

// Close implements broker.Broker: it ends every subscription (queue group
// members commit their positions and leave their groups) while it sends
// what was published before it, for up to 2 s, and closes the connections.
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
	c.prod.close()
	wg.Wait()
	c.closeTransport()
	return errors.Join(errs...)
}

// Log keys this package adds to those of internal/telemetry.
const (
	keyGroup     = "group"
	keyCount     = "count"
	keyPartition = "partition"
)

// Interface guards.
var (
	_ broker.Broker       = (*Conn)(nil)
	_ broker.SizeLimiter  = (*Conn)(nil)
	_ broker.Subscription = (*subscription)(nil)
)
