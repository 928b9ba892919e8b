package telemetry

import (
	"context"
	"net/url"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busmesh/busmesh/broker"
)

// System returns the messaging system of a broker URL, as OpenTelemetry's
// messaging.system and the broker label name it: nats (also the embedded
// server), rabbitmq or kafka; the scheme itself for another backend.
func System(rawURL string) string {
	u, err := url.Parse(rawURL)
	scheme := rawURL
	if err == nil && u.Scheme != "" {
		scheme = u.Scheme
	}
	switch scheme {
	case "nats", "tls", "embedded":
		return "nats"
	case "amqp", "amqps":
		return "rabbitmq"
	case "kafka", "kafkas":
		return "kafka"
	}
	return scheme
}

// MeterBroker wraps b so that its traffic is counted in m: messages
// published and received, failed publishes and subscribes, and the
// connected gauge (b's own word when it is a broker.Connectivity, else up
// from now until Close). The result keeps b's optional interfaces
// (broker.Returner, broker.SizeLimiter, broker.Connectivity); Unwrap
// returns b.
func MeterBroker(b broker.Broker, m *Metrics) broker.Broker {
	mb := &meteredBroker{
		b:         b,
		published: m.BrokerMessages.WithLabelValues("publish"),
		received:  m.BrokerMessages.WithLabelValues("receive"),
		pubErrs:   m.BrokerErrors.WithLabelValues("publish"),
		subErrs:   m.BrokerErrors.WithLabelValues("subscribe"),
	}
	connected := func() bool { return !mb.closed.Load() }
	if c, ok := b.(broker.Connectivity); ok {
		connected = func() bool { return !mb.closed.Load() && c.Connected() }
	}
	mb.connected = connected
	m.connected.Store(&connected)
	if r, ok := b.(broker.Returner); ok {
		return &meteredReturner{meteredBroker: mb, r: r}
	}
	return mb
}

type meteredBroker struct {
	b                                     broker.Broker
	published, received, pubErrs, subErrs prometheus.Counter
	closed                                atomic.Bool
	connected                             func() bool
}

// Unwrap returns the broker being metered, for type assertions on the
// backend's own methods.
func (m *meteredBroker) Unwrap() broker.Broker { return m.b }

func (m *meteredBroker) Publish(ctx context.Context, subject string, data []byte) error {
	err := m.b.Publish(ctx, subject, data)
	m.count(ctx, err)
	return err
}

// count counts a publish, or its error; a publish given up because its
// call ended (the caller went away, the deadline passed) is neither: the
// broker did not fail.
func (m *meteredBroker) count(ctx context.Context, err error) {
	switch {
	case err == nil:
		m.published.Inc()
	case !broker.Abandoned(ctx, err):
		m.pubErrs.Inc()
	}
}

func (m *meteredBroker) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	s, err := m.b.Subscribe(ctx, subject, m.handler(h))
	if err != nil {
		m.subErrs.Inc()
	}
	return s, err
}

func (m *meteredBroker) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	s, err := m.b.QueueSubscribe(ctx, subject, group, m.handler(h))
	if err != nil {
		m.subErrs.Inc()
	}
	return s, err
}

func (m *meteredBroker) handler(h broker.Handler) broker.Handler {
	return func(ctx context.Context, data []byte) {
		m.received.Inc()
		h(ctx, data)
	}
}

func (m *meteredBroker) Close() error {
	m.closed.Store(true)
	return m.b.Close()
}

// Connected implements broker.Connectivity.
func (m *meteredBroker) Connected() bool { return m.connected() }

// MaxMessageBytes implements broker.SizeLimiter with the wrapped broker's
// limit.
func (m *meteredBroker) MaxMessageBytes() int { return broker.MaxMessageBytes(m.b) }

// meteredReturner is a meteredBroker around a broker.Returner.
type meteredReturner struct {
	*meteredBroker
	r broker.Returner
}

func (m *meteredReturner) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	err := m.r.PublishReturnable(ctx, subject, data, token, returned)
	m.count(ctx, err)
	return err
}

var (
	_ broker.Broker       = (*meteredBroker)(nil)
	_ broker.SizeLimiter  = (*meteredBroker)(nil)
	_ broker.Connectivity = (*meteredBroker)(nil)
	_ broker.Returner     = (*meteredReturner)(nil)
)
