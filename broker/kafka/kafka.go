package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

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

const (
	// maxBuffered bounds the bytes the producer holds for the brokers. Past
	// it Publish waits for room until its ctx ends.
	maxBuffered = 32 << 20

	// flushTimeout is how long Close keeps sending what was published
	// before it.
	flushTimeout = 2 * time.Second
)

func init() {
	broker.Register(Scheme, open)
	broker.Register(TLSScheme, open)
}

// Conn is a Broker on a Kafka cluster. It has one franz-go client for
// publishing and creating topics, and one per subscription.
type Conn struct {
	cfg    *config
	logger *slog.Logger
	cl     *kgo.Client
	topics *topics
	health *health

	ctx      context.Context // of every record; cancelled when Close stops flushing
	cancel   context.CancelFunc
	buffered atomic.Int64             // bytes published and not yet answered
	promise  func(*kgo.Record, error) // c.produced, bound once: a method value per Produce allocates

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
	done   chan struct{} // closed when Close starts

	watching sync.WaitGroup // the watcher of the cluster's health, and its topic checks
	recheck  chan struct{}  // a topic check is wanted (startRecover)
}

func open(ctx context.Context, u *url.URL, logger *slog.Logger) (broker.Broker, error) {
	return dial(ctx, u, logger)
}

// Dial connects to the Kafka cluster named by rawURL (kafka:// or
// kafkas://). It fails, naming the addresses and why, when no broker
// answers before ctx's deadline or 5 s, whichever is sooner; once
// connected, franz-go retries lost connections forever. Errors never show
// the URL's password.
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
	acks := kgo.LeaderAck()
	if cfg.acks == -1 {
		acks = kgo.AllISRAcks()
	}
	h := newHealth()
	opts := append(cfg.clientOpts(logger, h.hook()),
		kgo.RequiredAcks(acks),
		kgo.ProducerLinger(0),                             // a lone request goes out at once; a busy producer batches instead
		kgo.ProducerBatchCompression(kgo.NoCompression()), // small envelopes: snappy costs more than it saves
		kgo.ProducerBatchMaxBytes(int32(cfg.maxBatch())),
		kgo.MaxBufferedBytes(maxBuffered),
		kgo.MaxBufferedRecords(1<<20), // maxBuffered is the bound that matters
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()),
		kgo.MaxVersions(produceByName()),
	)
	if cfg.acks != -1 {
		opts = append(opts, kgo.DisableIdempotentWrite()) // idempotence needs acks=all
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		if pctx.Err() != nil {
			err = fmt.Errorf("%w (gave up after %v)", err, timeout.Round(time.Millisecond))
		}
		return nil, fmt.Errorf("no broker of %s answered: %w", strings.Join(cfg.addrs, ","), err)
	}
	c := &Conn{
		cfg:     cfg,
		logger:  logger,
		cl:      cl,
		topics:  newTopics(cfg, cl),
		health:  h,
		subs:    map[*subscription]struct{}{},
		done:    make(chan struct{}),
		recheck: make(chan struct{}, 1),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.promise = c.produced
	c.watching.Go(c.watch)
	c.watching.Go(c.recoverLoop)
	return c, nil
}

// produceByName returns franz-go's request versions with Produce held at
// v12, which names topics; v13 (Kafka 4.1) names them by ID. After a
// cluster restarted empty, a produce request names topics the new cluster
// never had; kfake, which the tests run on, crashes on a request with two
// unknown topic IDs. v12 is what Kafka 2.8 to 4.0 speak, and a recreated
// topic is purged from the producer either way (recoverTopics).
func produceByName() *kversion.Versions {
	vs := kversion.Stable()
	if v, ok := vs.LookupMaxKeyVersion(int16(kmsg.Produce)); ok && v > 12 {
		vs.SetMaxKeyVersion(int16(kmsg.Produce), 12)
	}
	return vs
}

// clientOpts returns the options every client of c shares, with hooks
// reporting to c's health through k.
func (c *Conn) clientOpts(k *clientHook) []kgo.Opt { return c.cfg.clientOpts(c.logger, k) }

// clientOpts returns what every client of a Conn shares: brokers,
// identity, TLS, SASL, logging, and hooks reporting lost connections
// through k.
func (c *config) clientOpts(logger *slog.Logger, k *clientHook) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.WithHooks(k),
		kgo.SeedBrokers(c.addrs...),
		kgo.ClientID(c.clientID),
		kgo.DialTimeout(c.dialTimeout),
		kgo.MetadataMinAge(500 * time.Millisecond), // a moved leader is found quickly
		kgo.WithLogger(kgoLogger{logger}),
	}
	if c.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(c.tls.Clone()))
	}
	if c.sasl != nil {
		opts = append(opts, kgo.SASL(c.sasl))
	}
	if !c.metrics {
		// The sidecar exports its own metrics; franz-go's push would also
		// take a 4 MiB compression buffer.
		opts = append(opts, kgo.DisableClientMetrics())
	}
	return opts
}

// MaxMessageBytes implements broker.SizeLimiter: the largest payload, from
// the URL's max_message_bytes (default 1 MiB). Topics busmesh creates accept
// a record batch holding one message this large.
func (c *Conn) MaxMessageBytes() int { return c.cfg.maxMessage }

// deliveryTime is what DeliveryTime answers: a message goes out in a
// produce request and reaches each subscriber in its next fetch. CI saw an
// adapter's goodbye still unheard 350 ms after it was published, and calls
// sent meanwhile lost in a rolling restart.
const deliveryTime = time.Second

// DeliveryTime implements broker.Latent.
func (c *Conn) DeliveryTime() time.Duration { return deliveryTime }

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

// Publish implements broker.Broker. It returns once franz-go has buffered
// the message for its partition's leader, without waiting for the broker:
// franz-go sends it at once or with the next produce request to that
// broker, retrying where the broker says it may (leader moved, not enough
// replicas). Partitions are chosen round-robin. The first Publish to a
// subject looks its topic up, creating it if need be. Publish blocks only
// while 32 MiB of messages wait to be sent (their copies, from pools by
// size class, take up to half as much again); a message that waited for
// room is abandoned when ctx ends before it is sent.
func (c *Conn) Publish(ctx context.Context, subject string, data []byte) error {
	if err := c.usable(ctx); err != nil {
		return err
	}
	if len(data) > c.cfg.maxMessage {
		return fmt.Errorf("publish %s: %d bytes, limit %d: %w", subject, len(data), c.cfg.maxMessage, broker.ErrTooLarge)
	}
	if err := c.topics.ensure(ctx, subject); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	r := newRecord(subject, data)
	pctx := c.ctx
	if c.buffered.Add(int64(len(data))) > maxBuffered {
		pctx = ctx // full: wait for room only as long as the caller does
	}
	c.cl.Produce(pctx, r, c.promise)
	return nil
}

// produced logs a message franz-go gave up on, and recycles its record.
func (c *Conn) produced(r *kgo.Record, err error) {
	defer recycle(r)
	c.buffered.Add(-int64(len(r.Value)))
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, kgo.ErrClientClosed) {
		return
	}
	if topicLost(err) {
		// The cluster lost the topic; the check says so once, not once
		// per message.
		c.health.suspect()
		c.logger.Debug("publish failed", telemetry.KeySubject, r.Topic, telemetry.KeyErr, err)
		return
	}
	c.logger.Warn("publish failed", telemetry.KeySubject, r.Topic, telemetry.KeyErr, err)
}

// Close implements broker.Broker: it ends every subscription (queue group
// members commit their positions and leave their groups, for up to 2 s)
// while it sends what was published before it, for up to 2 s, and closes
// the connections.
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
	fctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	if err := c.cl.Flush(fctx); err != nil {
		c.logger.Warn("messages not sent before close", keyCount, c.cl.BufferedProduceRecords(), telemetry.KeyErr, err)
	}
	cancel()
	wg.Wait()
	c.cancel()
	c.watching.Wait()
	c.cl.Close()
	return errors.Join(errs...)
}

// kgoLogger passes franz-go's log lines to slog: its errors as warnings,
// its warnings (a failed request, a lost connection) as information, the
// rest as debug lines.
type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	if k.l.Enabled(context.Background(), slog.LevelDebug) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelWarn
	case kgo.LogLevelWarn:
		lv = slog.LevelInfo
	}
	k.l.Log(context.Background(), lv, msg, keyvals...)
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
	_ broker.Connectivity = (*Conn)(nil)
	_ broker.Subscription = (*subscription)(nil)
)
