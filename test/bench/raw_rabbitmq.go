package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	amqp "github.com/rabbitmq/amqp091-go"
)

// directReplyTo is RabbitMQ's pseudo-queue for replies: no queue to
// declare, replies go straight to the consuming channel.
const directReplyTo = "amq.rabbitmq.reply-to"

// rabbitRequester is amqp091-go request/reply with direct reply-to: one
// channel consumes amq.rabbitmq.reply-to and publishes the requests, and
// replies are matched by correlation id.
type rabbitRequester struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	queue   string
	pending *pending
	done    chan struct{} // closed when the reply loop ends
}

func newRabbitRequester(url, queue string) (*rabbitRequester, string, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, "", fmt.Errorf("connect to rabbitmq: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, "", fmt.Errorf("open channel: %w", err)
	}
	replies, err := ch.Consume(directReplyTo, "", true, false, false, false, nil)
	if err != nil {
		_ = conn.Close()
		return nil, "", fmt.Errorf("consume %s: %w", directReplyTo, err)
	}
	r := &rabbitRequester{conn: conn, ch: ch, queue: queue, pending: newPending(), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for d := range replies {
			id, err := strconv.ParseUint(d.CorrelationId, 36, 64)
			if err == nil {
				r.pending.deliver(id, d.Body)
			}
		}
	}()
	version := "RabbitMQ"
	if v, ok := conn.Properties["version"].(string); ok {
		version += " " + v
	}
	return r, version, nil
}

func (r *rabbitRequester) request(ctx context.Context, payload []byte) ([]byte, error) {
	id, ch := r.pending.open()
	err := r.ch.PublishWithContext(ctx, "", r.queue, false, false, amqp.Publishing{
		CorrelationId: strconv.FormatUint(id, 36),
		ReplyTo:       directReplyTo,
		Body:          payload,
	})
	if err != nil {
		r.pending.forget(id)
		return nil, fmt.Errorf("publish to %s: %w", r.queue, err)
	}
	return r.pending.wait(ctx, id, ch)
}

func (r *rabbitRequester) close() error {
	err := r.conn.Close()
	<-r.done
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return err
}

// respondRabbitMQ declares queue and answers every message on it with its
// own body, to the message's reply-to, with its correlation id.
func respondRabbitMQ(ctx context.Context, url, queue string, ready func(string)) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return fmt.Errorf("connect to rabbitmq: %w", err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		return fmt.Errorf("declare %s: %w", queue, err)
	}
	requests, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", queue, err)
	}
	ready(queue)
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-requests:
			if !ok {
				return fmt.Errorf("consumer of %s closed", queue)
			}
			if err := ch.PublishWithContext(ctx, "", d.ReplyTo, false, false, amqp.Publishing{
				CorrelationId: d.CorrelationId,
				Body:          d.Body,
			}); err != nil && ctx.Err() == nil {
				return fmt.Errorf("reply: %w", err)
			}
		}
	}
}
