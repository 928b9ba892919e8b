package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// groupQueueExpiry deletes a group queue that has had no consumer for this
// long: one declared by a member that died before consuming, or one the
// broker recovered on restart (auto-delete acts only after a consumer has
// come and gone). A queue with consumers never expires.
const groupQueueExpiry = 60 * time.Second

// maxGroupAckBatch bounds the messages a busy group member handles before it
// acknowledges them: those are redelivered to another member, and handled
// twice, if its connection drops first.
const maxGroupAckBatch = 8

// fanoutAckDelay is how long a fan-out subscription lets acknowledgements
// wait to share one frame (see serve).
const fanoutAckDelay = 5 * time.Millisecond

// Subscribe implements broker.Broker with an exclusive, auto-delete,
// server-named queue bound to subject. It returns once the queue is bound
// and consumed from; while the connection is down it returns
// broker.ErrDisconnected. Subjects must not contain the wildcard tokens "*"
// or "#".
func (c *Conn) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	return c.subscribe(ctx, subject, "", h)
}

// QueueSubscribe implements broker.Broker with a queue shared by every
// member of group (see the package documentation), consumed with the
// prefetch limit and acknowledged after the handler returns.
func (c *Conn) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	if group == "" {
		return nil, fmt.Errorf("subscribe %s: empty queue group", subject)
	}
	return c.subscribe(ctx, subject, group, h)
}

// subscription is one consumer, re-created on every new connection by its
// own goroutine, which is also the only caller of the handler.
type subscription struct {
	c       *Conn
	subject string
	group   string // "" for fan-out
	h       broker.Handler

	ctx    context.Context // the handler's; cancelled by Unsubscribe
	cancel context.CancelFunc
	stop   func() bool   // stops cancelling with the caller's ctx
	exited chan struct{} // closed when the goroutine has returned
}

func (c *Conn) subscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("subscribe %s: nil handler", subject)
	}
	if err := validSubject(subject, true); err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	s := &subscription{c: c, subject: subject, group: group, h: h, exited: make(chan struct{})}
	sess, err := c.session(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	var ch *amqp.Channel
	var deliveries <-chan amqp.Delivery
	// A group queue can be auto-deleted by its last member leaving between
	// our declare and our consume (404); declaring again re-creates it.
	for attempt := 0; ; attempt++ {
		ch, deliveries, err = s.open(sess)
		var ae *amqp.Error
		if err == nil || attempt == 2 || !errors.As(err, &ae) || ae.Code != amqp.NotFound {
			break
		}
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if ch != nil {
			_ = ch.Close()
		}
		switch {
		case c.closing.Load():
			err = broker.ErrClosed
		case ctx.Err() == nil && (sess.conn.IsClosed() || errors.Is(err, amqp.ErrClosed)):
			// Lost before the supervisor noticed.
			err = fmt.Errorf("%w: %w", broker.ErrDisconnected, err)
		}
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}

	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.cancel()
		_ = ch.Close()
		return nil, fmt.Errorf("subscribe %s: %w", subject, broker.ErrClosed)
	}
	c.subs[s] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	s.stop = context.AfterFunc(ctx, s.cancel)
	go s.run(sess, ch, deliveries)
	return s, nil
}

// open declares and binds the subscription's queue on a new channel and
// starts consuming. On error the channel is closed and nil.
func (s *subscription) open(sess *session) (_ *amqp.Channel, _ <-chan amqp.Delivery, err error) {
	ch, err := sess.conn.Channel()
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			_ = ch.Close()
		}
	}()
	cfg := s.c.cfg
	var q amqp.Queue
	if s.group == "" {
		if err = ch.Qos(fanoutPrefetch, 0, false); err != nil {
			return nil, nil, err
		}
		// Exclusive and auto-delete: the queue lives as long as this
		// subscription on this connection.
		q, err = ch.QueueDeclare("", false, true, true, false, nil)
	} else {
		if err = ch.Qos(cfg.prefetch, 0, false); err != nil {
			return nil, nil, err
		}
		// Shared and auto-delete: it goes with its last member, and from
		// then on publishes to the subject are returned. Durable only
		// because RabbitMQ 4 deprecates transient non-exclusive queues;
		// the messages are transient.
		q, err = ch.QueueDeclare(groupQueue(cfg.exchange, s.group, s.subject), true, true, false, false, amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeClassic,
			amqp.QueueTTLArg:  groupQueueExpiry.Milliseconds(),
		})
	}
	if err != nil {
		return nil, nil, fmt.Errorf("declare queue: %w", err)
	}
	if err = ch.QueueBind(q.Name, s.subject, cfg.exchange, false, nil); err != nil {
		return nil, nil, fmt.Errorf("bind queue %s: %w", q.Name, err)
	}
	deliveries, err := ch.Consume(q.Name, "", false, false, false, false, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("consume from %s: %w", q.Name, err)
	}
	return ch, deliveries, nil
}

// run serves deliveries until the subscription ends, re-opening it on the
// next connection whenever the channel or connection is lost.
func (s *subscription) run(sess *session, ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	defer func() {
		s.stop()
		s.cancel()
		s.c.mu.Lock()
		delete(s.c.subs, s)
		s.c.mu.Unlock()
		close(s.exited)
		s.c.wg.Done()
	}()
	for {
		s.serve(ch, deliveries)
		// Close closes the connection, and every channel with it, at once.
		if !s.c.closing.Load() {
			if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				s.c.logger.Debug("close subscription channel", telemetry.KeySubject, s.subject, telemetry.KeyErr, err)
			}
		}
		if s.ctx.Err() != nil {
			return
		}
		if !sess.conn.IsClosed() {
			// The connection is fine: the broker cancelled the consumer
			// (its queue was deleted) or closed the channel.
			s.c.logger.Warn("subscription lost", telemetry.KeySubject, s.subject)
		}
		if sess, ch, deliveries = s.reopen(); ch == nil {
			return
		}
	}
}

// serve calls the handler for each delivery until deliveries ends (channel
// or connection lost) or the subscription is cancelled.
//
// Acknowledgements follow the handler, batched with multiple=true every
// half prefetch (a group member: at most maxGroupAckBatch) while deliveries
// keep coming. A group member acks as soon as no delivery is waiting: an
// unacked message it already handled would be redelivered to another member
// if the connection dropped. A fan-out queue dies with its connection, so
// nothing is ever redelivered from it and its acks only refill the prefetch
// window: they wait up to fanoutAckDelay to share one frame, which on a
// request/reply inbox saves a frame per reply.
func (s *subscription) serve(ch *amqp.Channel, deliveries <-chan amqp.Delivery) {
	ackEvery, delay := fanoutPrefetch/2, fanoutAckDelay
	if s.group != "" {
		ackEvery, delay = min(maxGroupAckBatch, max(1, s.c.cfg.prefetch/2)), 0
	}
	var last uint64
	pending := 0
	ack := func() {
		if pending > 0 {
			// An error means the channel is gone; the broker requeues.
			_ = ch.Ack(last, true)
			pending = 0
		}
	}
	defer ack()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var ackDue <-chan time.Time // armed while acks wait
	for {
		var d amqp.Delivery
		var ok bool
		if pending > 0 && ackDue == nil {
			select {
			case d, ok = <-deliveries:
			default:
				if delay == 0 {
					ack()
					continue
				}
				timer.Reset(delay)
				ackDue = timer.C
				continue
			}
		} else {
			select {
			case d, ok = <-deliveries:
			case <-ackDue:
				ackDue = nil
				ack()
				continue
			case <-s.ctx.Done():
				return
			}
		}
		if !ok || s.ctx.Err() != nil {
			// Not handled, not acknowledged: a group's broker redelivers it
			// to another member once this channel closes.
			return
		}
		s.h(s.ctx, d.Body)
		last = d.DeliveryTag
		if pending++; pending >= ackEvery {
			ack()
			timer.Stop()
			ackDue = nil
		}
	}
}

// reopen re-creates the subscription on the current or next session,
// retrying with backoff. It returns a nil channel once the subscription is
// cancelled or the Conn closed.
func (s *subscription) reopen() (*session, *amqp.Channel, <-chan amqp.Delivery) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for attempt := 0; ; attempt++ {
		sess, err := s.c.session(s.ctx, true)
		if err != nil {
			return nil, nil, nil
		}
		ch, deliveries, err := s.open(sess)
		if err == nil {
			s.c.logger.Debug("subscription restored", telemetry.KeySubject, s.subject)
			return sess, ch, deliveries
		}
		if sess.conn.IsClosed() {
			// The connection's loss is the supervisor's to log; wait for
			// the next one.
			select {
			case <-sess.lost:
				continue
			case <-s.ctx.Done():
				return nil, nil, nil
			}
		}
		if attempt%10 == 0 {
			s.c.logger.Warn("restore subscription", telemetry.KeySubject, s.subject, telemetry.KeyErr, err)
		}
		timer.Reset(backoff(attempt))
		select {
		case <-timer.C:
		case <-s.ctx.Done():
			return nil, nil, nil
		}
	}
}

// Unsubscribe implements broker.Subscription. It cancels the handler's
// context, waits for a running handler call, acknowledges what was handled
// and closes the subscription's channel (a group's broker redelivers what
// was prefetched but not handled to the other members). It must not be
// called from the subscription's own handler, which it would wait for.
func (s *subscription) Unsubscribe() error {
	s.cancel()
	<-s.exited
	return nil
}
