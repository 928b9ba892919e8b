package broker

import (
	"context"
	"errors"
	"time"
)

// Handler receives one message from a subscription.
//
// Calls for one subscription are serial: the backend does not call the
// handler again until it has returned, so a handler that blocks holds back
// that subscription (which is how a busy queue-group member takes less work on
// brokers that let it), never the connection's other subscriptions. ctx is the
// subscription's context: it is cancelled when the subscription ends, and a
// blocked handler should return when it is. As Unsubscribe waits for a
// running handler, a handler must not end its own subscription.
//
// data belongs to the handler: the backend does not reuse it, so the handler
// may keep it, or slices of it, after returning.
type Handler func(ctx context.Context, data []byte)

// Broker is one connection to a message broker. Every method is safe for
// concurrent use.
//
// Subjects are dot-separated tokens (see Subject). A backend maps them onto
// its own concepts: NATS subjects, RabbitMQ routing keys, Kafka topics.
type Broker interface {
	// Publish sends data to every fan-out subscriber of subject and to one
	// member of each queue group subscribed to it. It returns once the backend
	// has taken the message (buffered or written); delivery is at most once.
	// The caller may reuse data as soon as Publish returns. Cancelling ctx
	// abandons a publish that is waiting for the connection. Publish returns
	// ErrTooLarge for a message over the broker's size limit and ErrClosed
	// after Close.
	Publish(ctx context.Context, subject string, data []byte) error

	// Subscribe delivers every message published to subject to h (fan-out).
	// It returns once the subscription is active: a message published after
	// Subscribe returns reaches h. The subscription lasts until ctx is
	// cancelled, Unsubscribe is called, or the Broker is closed.
	Subscribe(ctx context.Context, subject string, h Handler) (Subscription, error)

	// QueueSubscribe is Subscribe for a queue group: each message published
	// to subject goes to one member of group.
	QueueSubscribe(ctx context.Context, subject, group string, h Handler) (Subscription, error)

	// Close ends every subscription, waits for running handlers to return and
	// closes the connection. Messages published before Close are flushed on a
	// best-effort basis. Close is idempotent.
	Close() error
}

// Subscription is an active subscription.
type Subscription interface {
	// Unsubscribe stops delivery, cancels the context passed to the handler
	// and returns after a running handler call has returned. It is
	// idempotent and safe for concurrent use.
	Unsubscribe() error
}

// Drainer is implemented by subscriptions that can end gracefully: the
// broker stops delivering, and messages it already handed to this member
// still reach the handler, instead of being lost (core NATS) or given back
// (RabbitMQ requeues unacknowledged messages; Kafka redelivers uncommitted
// ones, so their Unsubscribe loses nothing either way). An adapter leaving
// its queue group drains.
type Drainer interface {
	// Drain stops delivery of new messages, lets the handler take those
	// already delivered, then ends the subscription as Unsubscribe does. It
	// returns when done, or unsubscribes at once when ctx ends.
	Drain(ctx context.Context) error
}

// Returner is implemented by backends whose broker hands back a message that
// reached no subscriber: NATS answers "no responders", RabbitMQ returns
// mandatory messages it could not route. The ambassador uses it to fail a
// call at once instead of at its deadline; on other backends the discovery
// registry gives the same answer.
type Returner interface {
	// PublishReturnable is Publish for a message tagged with token. If the
	// broker finds no subscriber for it, the backend calls returned(token)
	// once, soon after, on a goroutine of its own; returned must not block.
	// returned must be the same function on every call to one Broker.
	PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(token uint64)) error
}

// Connectivity is implemented by backends that know whether their
// connection to the broker is up. While it is down a sidecar answers new
// calls broker-unavailable at once instead of letting them wait in a
// reconnect buffer until their deadline, and discovery does not take the
// silence of the mesh for its absence.
type Connectivity interface {
	// Connected reports whether the connection is up now. It is safe for
	// concurrent use and does not block.
	Connected() bool
}

// Connected reports whether b's connection is up; a backend that cannot
// tell is taken to be connected.
func Connected(b Broker) bool {
	if c, ok := b.(Connectivity); ok {
		return c.Connected()
	}
	return true
}

// Latent is implemented by backends whose messages can take a noticeable
// time to reach their subscribers when all is well (Kafka: a produce, then
// each subscriber's next fetch). An adapter that said goodbye keeps taking
// calls at least this long, so that ambassadors have heard the goodbye
// before it stops; else calls they sent it meanwhile are lost.
type Latent interface {
	// DeliveryTime is how long a message may take to reach the
	// subscribers on a loaded machine.
	DeliveryTime() time.Duration
}

// DeliveryTime returns b's DeliveryTime, or 0 for a backend that is not
// Latent.
func DeliveryTime(b Broker) time.Duration {
	if l, ok := b.(Latent); ok {
		return l.DeliveryTime()
	}
	return 0
}

// SizeLimiter is implemented by backends that know the largest message the
// broker accepts. Larger payloads must be split by the caller; the data path
// streams bodies in frames no larger than this.
type SizeLimiter interface {
	// MaxMessageBytes returns the largest message Publish accepts.
	MaxMessageBytes() int
}

// DefaultMaxMessageBytes is the size limit assumed for a backend that is not
// a SizeLimiter: 1 MiB, the default of NATS and Kafka.
const DefaultMaxMessageBytes = 1 << 20

// MaxMessageBytes returns b's message size limit, or DefaultMaxMessageBytes.
func MaxMessageBytes(b Broker) int {
	if l, ok := b.(SizeLimiter); ok {
		if n := l.MaxMessageBytes(); n > 0 {
			return n
		}
	}
	return DefaultMaxMessageBytes
}

var (
	// ErrClosed is returned by operations on a closed Broker. The caller
	// should stop using it; it never recovers.
	ErrClosed = errors.New("broker closed")

	// ErrTooLarge is returned by Publish for a message above the broker's
	// size limit. Retrying the same message cannot succeed; split it.
	ErrTooLarge = errors.New("message too large for broker")

	// ErrNoResponders reports that nobody is subscribed to the subject of a
	// request. Retrying on the same subject fails the same way until a
	// subscriber appears.
	ErrNoResponders = errors.New("no responders")

	// ErrDisconnected is returned by Publish while the connection to the
	// broker is down and the backend cannot buffer the message. The backend
	// keeps reconnecting; a later Publish may succeed.
	ErrDisconnected = errors.New("broker disconnected")
)

// Abandoned reports whether err is only ctx's end: an operation given up
// because its caller went away or its deadline passed, which says nothing
// of the broker.
func Abandoned(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}
