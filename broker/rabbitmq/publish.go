package rabbitmq

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// tokenPrefix marks the MessageId of a PublishReturnable message; the rest
// is the token in base 36. Plain Publish leaves MessageId empty.
const tokenPrefix = "bm-r-"

// MaxMessageBytes implements broker.SizeLimiter: the ?max_message_bytes=
// option, or else the default max_message_size of the server's version
// (128 MiB for RabbitMQ 3.x, 16 MiB for 4.x). A message of exactly this size
// is accepted.
func (c *Conn) MaxMessageBytes() int { return int(c.maxBytes.Load()) }

// Publish implements broker.Broker. The message goes to the exchange with
// the subject as routing key and the mandatory flag; if no queue takes it,
// the broker returns it and it is dropped. Publish does not wait for the
// broker unless the URL asks for ?confirm=true. While the connection is
// down it returns broker.ErrDisconnected at once rather than wait: callers
// have deadlines, and the retry policy above decides what to do.
func (c *Conn) Publish(ctx context.Context, subject string, data []byte) error {
	return c.publish(ctx, subject, data, "")
}

// PublishReturnable implements broker.Returner. The token travels in the
// message's MessageId; when the broker returns the message (basic.return:
// no queue is bound to subject), the publishing channel's return loop calls
// returned(token).
func (c *Conn) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(token uint64)) error {
	if c.returned.Load() == nil {
		c.returned.CompareAndSwap(nil, &returned)
	}
	var buf [len(tokenPrefix) + 13]byte
	id := strconv.AppendUint(append(buf[:0], tokenPrefix...), token, 36)
	return c.publish(ctx, subject, data, string(id))
}

func (c *Conn) publish(ctx context.Context, subject string, data []byte, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.closing.Load() {
		return fmt.Errorf("publish %s: %w", subject, broker.ErrClosed)
	}
	// Checked here: RabbitMQ answers an oversize message by closing the
	// channel, which would take every publisher's channel down with it.
	if limit := c.MaxMessageBytes(); len(data) > limit {
		return fmt.Errorf("publish %s: %d bytes, limit %d: %w", subject, len(data), limit, broker.ErrTooLarge)
	}
	if err := validSubject(subject, false); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	sess := c.cur.Load()
	if sess == nil {
		return fmt.Errorf("publish %s: %w", subject, broker.ErrDisconnected)
	}
	if sess.blocked.Load() {
		return fmt.Errorf("publish %s: broker blocked publishing (resource alarm): %w", subject, broker.ErrDisconnected)
	}
	ch := sess.pub.Load()
	msg := amqp.Publishing{Body: data, MessageId: id}
	if !c.cfg.confirm {
		return c.publishErr(subject, ch.Publish(c.cfg.exchange, subject, true, false, msg))
	}
	dc, err := ch.PublishWithDeferredConfirm(c.cfg.exchange, subject, true, false, msg)
	if err != nil {
		return c.publishErr(subject, err)
	}
	acked, err := dc.WaitContext(ctx)
	switch {
	case err != nil:
		return fmt.Errorf("publish %s: waiting for confirm: %w", subject, err)
	case acked:
		return nil
	case ch.IsClosed():
		// Pending confirms are nacked when the channel closes.
		return c.publishErr(subject, amqp.ErrClosed)
	}
	return fmt.Errorf("publish %s: broker nacked the message", subject)
}

// publishErr maps an error from the publishing channel. Any of them means
// the channel or the connection is gone: ErrClosed after Close, else
// ErrDisconnected until the channel or connection is back.
func (c *Conn) publishErr(subject string, err error) error {
	switch {
	case err == nil:
		return nil
	case c.closing.Load():
		return fmt.Errorf("publish %s: %w", subject, broker.ErrClosed)
	}
	return fmt.Errorf("publish %s: %w: %w", subject, broker.ErrDisconnected, err)
}

// publisher is a publishing channel with its listeners, registered before
// the channel is published in session.pub so that no return is missed.
type publisher struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
}

// openPublisher opens a publishing channel and makes it the session's.
func (s *session) openPublisher(confirm bool) (publisher, error) {
	ch, err := s.conn.Channel()
	if err != nil {
		return publisher{}, fmt.Errorf("open publishing channel: %w", err)
	}
	if confirm {
		if err := ch.Confirm(false); err != nil {
			_ = ch.Close()
			return publisher{}, fmt.Errorf("enable publisher confirms: %w", err)
		}
	}
	p := publisher{
		ch:      ch,
		returns: ch.NotifyReturn(make(chan amqp.Return, 64)),
		closes:  ch.NotifyClose(make(chan *amqp.Error, 1)),
	}
	s.pub.Store(ch)
	return p, nil
}

// publishLoop reads the publishing channel's returns for as long as the
// session lives, and reopens the channel if the broker closes it while the
// connection stays up (say, the exchange was deleted under us).
func (c *Conn) publishLoop(s *session, p publisher) {
	for {
		// amqp091-go hands returns to listeners from its reader goroutine,
		// so this loop must keep draining; it ends when the channel closes.
		for r := range p.returns {
			c.deliverReturn(r)
		}
		reason := <-p.closes
		if s.conn.IsClosed() {
			return
		}
		c.logger.Warn("publishing channel closed", telemetry.KeyErr, reason)
		var ok bool
		if p, ok = c.reopenPublisher(s); !ok {
			return
		}
	}
}

// reopenPublisher redeclares the exchange, which may be what went missing,
// and opens a publishing channel, with backoff until it succeeds or the
// session is lost (false).
func (c *Conn) reopenPublisher(s *session) (publisher, bool) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for attempt := 0; ; attempt++ {
		timer.Reset(backoff(attempt))
		select {
		case <-s.lost:
			return publisher{}, false
		case <-timer.C:
		}
		_, err := s.declareExchange(c.cfg.exchange, c.cfg.exchType)
		if err == nil {
			var p publisher
			if p, err = s.openPublisher(c.cfg.confirm); err == nil {
				return p, true
			}
		}
		if s.conn.IsClosed() {
			return publisher{}, false
		}
		c.logger.Warn("reopen publishing channel", telemetry.KeyErr, err)
	}
}

// deliverReturn tells the Returner's callback about a returned message of
// PublishReturnable; returns of plain Publish are dropped.
func (c *Conn) deliverReturn(r amqp.Return) {
	s, ok := strings.CutPrefix(r.MessageId, tokenPrefix)
	if !ok {
		return
	}
	token, err := strconv.ParseUint(s, 36, 64)
	if err != nil {
		return
	}
	if f := c.returned.Load(); f != nil {
		(*f)(token)
	}
}
