package rabbitmq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/coalesce"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Scheme is the URL scheme of a RabbitMQ broker:
// amqp://user:pass@host:5672/vhost, with options in the query (see the
// package documentation).
const Scheme = "amqp"

// SchemeTLS is Scheme over TLS: amqps://user:pass@host:5671/vhost. The
// certificate options amqp091-go reads (cacertfile, certfile, keyfile,
// server_name_indication) go in the query.
const SchemeTLS = "amqps"

func init() {
	broker.Register(Scheme, open)
	broker.Register(SchemeTLS, open)
}

const (
	// dialTimeout bounds one connection attempt, handshake and exchange
	// declaration included, when ctx allows longer.
	dialTimeout = 5 * time.Second
	// closeTimeout bounds the connection.close handshake in Close.
	closeTimeout = 2 * time.Second
)

// Conn is a Broker on one AMQP connection to RabbitMQ, re-established with
// its subscriptions whenever it is lost.
type Conn struct {
	cfg    config
	logger *slog.Logger

	// The publish path reads these without a lock.
	cur      atomic.Pointer[session] // nil while reconnecting
	closing  atomic.Bool
	maxBytes atomic.Int64
	returned atomic.Pointer[func(uint64)]

	// life is cancelled by Close: it stops redialling and subscriptions
	// waiting for a connection.
	life context.Context
	kill context.CancelFunc

	mu     sync.Mutex
	up     chan struct{} // closed while cur is set; replaced when it is lost
	subs   map[*subscription]struct{}
	closed bool

	supervisor sync.WaitGroup // the reconnect loop
	wg         sync.WaitGroup // subscriptions' goroutines
}

// session is one AMQP connection and what hangs off it.
type session struct {
	conn    *amqp.Connection
	pub     atomic.Pointer[amqp.Channel] // the publishing channel
	blocked atomic.Bool                  // the broker has blocked publishing (resource alarm)
	closes  chan *amqp.Error             // connection closed
	blocks  chan amqp.Blocking           // connection.blocked / unblocked
	lost    chan struct{}                // closed by the supervisor once the connection is gone
	wg      sync.WaitGroup               // the publisher loop
	// exchangeKind is the exchange's type, which an earlier declaration
	// may have chosen (declareExchange).
	exchangeKind string
}

func open(ctx context.Context, u *url.URL, logger *slog.Logger) (broker.Broker, error) {
	return dial(ctx, u, logger)
}

// Dial connects to the RabbitMQ broker at rawURL and declares the exchange.
// It fails when the broker does not answer before ctx's deadline (at most
// 5 s), with the reason and without the password. Once connected, a lost
// connection is redialled forever with jittered backoff and every
// subscription is restored. A nil logger discards.
func Dial(ctx context.Context, rawURL string, logger *slog.Logger) (*Conn, error) {
	u, err := broker.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := dial(ctx, u, logger)
	if err != nil {
		return nil, &broker.ConnectError{URL: broker.Redact(rawURL), Err: err}
	}
	return c, nil
}

func dial(ctx context.Context, u *url.URL, logger *slog.Logger) (*Conn, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := parseConfig(u)
	if err != nil {
		return nil, err
	}
	c := &Conn{
		cfg:    cfg,
		logger: logger.With(telemetry.KeyBroker, cfg.redacted),
		subs:   map[*subscription]struct{}{},
		up:     make(chan struct{}),
	}
	sess, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if sess.exchangeKind != cfg.exchType {
		c.logger.Info("exchange kept as declared before", "exchange", cfg.exchange, "type", sess.exchangeKind, "asked", cfg.exchType)
	}
	c.life, c.kill = context.WithCancel(context.Background())
	c.cur.Store(sess)
	close(c.up)
	c.supervisor.Go(func() { c.supervise(sess) })
	return c, nil
}

// connect dials, declares the exchange and opens the publishing channel,
// all within ctx and dialTimeout.
func (c *Conn) connect(ctx context.Context) (*session, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()

	// Closing the socket when ctx ends unblocks whichever step is waiting;
	// the deadline bounds the TCP, TLS and AMQP handshakes as well.
	var nc atomic.Pointer[net.Conn]
	stop := context.AfterFunc(ctx, func() {
		if p := nc.Load(); p != nil {
			(*p).Close()
		}
	})
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("busmesh")
	ac, err := amqp.DialConfig(c.cfg.amqpURL, amqp.Config{
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Deadline: deadline}
			conn, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			_ = conn.SetDeadline(deadline)
			// Concurrent publishes share write system calls (internal/coalesce).
			conn = coalesce.Wrap(conn)
			nc.Store(&conn)
			return conn, nil
		},
	})
	sess := &session{conn: ac}
	var p publisher
	if err == nil {
		p, err = sess.setup(c.cfg)
	}
	if !stop() && err == nil {
		err = ctx.Err() // ctx ended as setup finished: the socket is closing
	}
	if err != nil {
		sock := nc.Load()
		if sock != nil {
			(*sock).Close()
		}
		return nil, connectErr(ctx, deadline, sock != nil, c.cfg, err)
	}
	if c.cfg.maxBytes > 0 {
		c.maxBytes.Store(int64(c.cfg.maxBytes))
	} else {
		c.maxBytes.Store(int64(serverMaxBytes(ac.Properties)))
	}
	sess.wg.Go(func() { c.publishLoop(sess, p) })
	return sess, nil
}

// setup registers the connection's listeners, declares the exchange and
// opens the publishing channel.
func (s *session) setup(cfg config) (publisher, error) {
	s.closes = s.conn.NotifyClose(make(chan *amqp.Error, 1))
	s.blocks = s.conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	s.lost = make(chan struct{})
	var err error
	if s.exchangeKind, err = s.declareExchange(cfg.exchange, cfg.exchType); err != nil {
		return publisher{}, err
	}
	return s.openPublisher(cfg.confirm)
}

// declareExchange declares the exchange on a channel of its own and returns
// its type. Durable: the exchange is shared by every sidecar and outlives
// them. A new exchange gets the type the URL asks for, direct by default:
// subjects are literal, and a direct exchange routes them for less of the
// broker's CPU than a topic exchange (README, "Benchmark"). An exchange that
// exists as the other of the two (declared by an earlier busmesh, which
// declared topic, or by an operator) is used as it is: it routes literal
// subjects alike, and RabbitMQ refuses to redeclare an exchange as another
// type.
func (s *session) declareExchange(name, kind string) (string, error) {
	other := amqp.ExchangeTopic
	if kind == amqp.ExchangeTopic {
		other = amqp.ExchangeDirect
	}
	var errs []error
	for _, k := range []string{kind, other} {
		ch, err := s.conn.Channel()
		if err != nil {
			return "", fmt.Errorf("open channel: %w", err)
		}
		err = ch.ExchangeDeclare(name, k, true, false, false, false, nil)
		if err == nil {
			return k, ch.Close()
		}
		// The broker closed the channel; a 406 (precondition failed) says
		// the exchange exists with another type or other arguments.
		errs = append(errs, err)
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
			break
		}
	}
	return "", fmt.Errorf("declare exchange %q: %w", name, errors.Join(errs...))
}

// connectErr says why connect failed. amqp091-go's errors do not repeat the
// URL, so none of them shows the password.
func connectErr(ctx context.Context, deadline time.Time, connected bool, cfg config, err error) error {
	ctxErr := ctx.Err()
	if ctxErr == nil && !time.Now().Before(deadline) {
		// The socket's deadline, the same as ctx's, fired first.
		ctxErr = context.DeadlineExceeded
	}
	var ae *amqp.Error
	switch {
	case ctxErr != nil && connected:
		return fmt.Errorf("AMQP handshake not finished: %w", ctxErr)
	case ctxErr != nil:
		return fmt.Errorf("%w: %w", ctxErr, err)
	case errors.As(err, &ae) && ae.Code == amqp.AccessRefused:
		return fmt.Errorf("log in as %q: %w", cfg.user, err)
	case errors.As(err, new(x509.HostnameError)):
		return fmt.Errorf("TLS handshake: the server's certificate does not name the host dialed (set tls_server_name to a name it has): %w", err)
	case errors.As(err, new(*tls.CertificateVerificationError)):
		return fmt.Errorf("TLS handshake: the server's certificate does not verify against tls_ca (or the system's CAs without it): %w", err)
	}
	return err
}

// supervise watches the current session and, when its connection is lost,
// redials until it succeeds or Close is called. Subscriptions restore
// themselves once the new session is published in c.cur.
func (c *Conn) supervise(sess *session) {
	for {
		var reason *amqp.Error
	watch:
		for {
			select {
			case <-c.life.Done():
				return
			case reason = <-sess.closes:
				break watch
			case b, ok := <-sess.blocks:
				if !ok {
					sess.blocks = nil
					continue
				}
				sess.blocked.Store(b.Active)
				if b.Active {
					c.logger.Warn("broker blocked publishing", telemetry.KeyReason, b.Reason)
				} else {
					c.logger.Info("broker unblocked publishing")
				}
			}
		}
		c.mu.Lock()
		c.cur.Store(nil)
		c.up = make(chan struct{})
		close(sess.lost)
		c.mu.Unlock()
		sess.wg.Wait()
		var err error = amqp.ErrClosed
		if reason != nil {
			err = reason
		}
		c.logger.Warn("broker connection lost", telemetry.KeyErr, err)

		next := c.redial()
		if next == nil {
			return
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			_ = next.close() // closed while reconnecting: the new connection is not wanted
			return
		}
		c.cur.Store(next)
		close(c.up)
		c.mu.Unlock()
		c.logger.Info("broker reconnected")
		sess = next
	}
}

// redial connects again with jittered backoff. It returns nil once Close
// has been called.
func (c *Conn) redial() *session {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for attempt := 0; ; attempt++ {
		timer.Reset(backoff(attempt))
		select {
		case <-c.life.Done():
			return nil
		case <-timer.C:
		}
		sess, err := c.connect(c.life)
		if err == nil {
			return sess
		}
		if c.life.Err() != nil {
			return nil
		}
		// One warning per ten attempts: the loss itself was logged once.
		lvl := slog.LevelDebug
		if attempt%10 == 9 {
			lvl = slog.LevelWarn
		}
		c.logger.Log(c.life, lvl, "broker reconnect failed", telemetry.KeyErr, err, "attempt", attempt+1)
	}
}

// backoff grows from about 100 ms to about 1 s, with jitter so a fleet of
// sidecars does not redial in lock-step.
func backoff(attempt int) time.Duration {
	d := min(100*time.Millisecond<<min(attempt, 4), time.Second)
	return d/2 + rand.N(d/2)
}

// session returns the current session. While reconnecting it returns
// broker.ErrDisconnected, or with wait set waits for the next session until
// ctx ends.
func (c *Conn) session(ctx context.Context, wait bool) (*session, error) {
	for {
		c.mu.Lock()
		closed, sess, up := c.closed, c.cur.Load(), c.up
		c.mu.Unlock()
		switch {
		case closed:
			return nil, broker.ErrClosed
		case sess != nil:
			return sess, nil
		case !wait:
			return nil, broker.ErrDisconnected
		}
		select {
		case <-up:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.life.Done():
			return nil, broker.ErrClosed
		}
	}
}

// Connected implements broker.Connectivity: false while reconnecting.
func (c *Conn) Connected() bool { return c.cur.Load() != nil }

// Close implements broker.Broker. It ends every subscription, waits for
// their handlers, stops reconnecting and closes the connection, which sends
// what was published before it.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.closing.Store(true)
	c.kill()
	subs := make([]*subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()

	for _, s := range subs {
		s.cancel()
	}
	c.wg.Wait()
	c.supervisor.Wait()
	if sess := c.cur.Load(); sess != nil {
		if err := sess.close(); err != nil {
			c.logger.Debug("broker close", telemetry.KeyErr, err)
		}
	}
	return nil
}

// close closes the connection of a session that is not lost, briefly
// waiting for the broker's answer, and waits for the session's goroutines.
func (s *session) close() error {
	close(s.lost) // the session is no one's to supervise any more
	err := s.conn.CloseDeadline(time.Now().Add(closeTimeout))
	s.wg.Wait()
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return err
}

// Interface guards.
var (
	_ broker.Broker       = (*Conn)(nil)
	_ broker.Returner     = (*Conn)(nil)
	_ broker.SizeLimiter  = (*Conn)(nil)
	_ broker.Connectivity = (*Conn)(nil)
)
