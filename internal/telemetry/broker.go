package telemetry

import (
	"context"
	"net/url"
	"sync/atomic"
	"time"

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

// PrimaryConnection is the connection label of the sidecar's own broker,
// the name config.PrimaryBroker gives it in brokers weights; the
// connections of ambassador.brokers are labelled with their names.
const PrimaryConnection = "primary"

// MeterBroker wraps b, the sidecar's own broker, so that its traffic is
// counted in m: messages published and received, failed publishes and
// subscribes, and the connected gauge (b's own word when it is a
// broker.Connectivity, else up from now until Close). The result keeps
// b's optional interfaces (broker.Returner, broker.SizeLimiter,
// broker.Connectivity); Unwrap returns b.
func MeterBroker(b broker.Broker, m *Metrics) broker.Broker {
	mb := meter(b, m, m.Broker, PrimaryConnection)
	m.connected.Store(&mb.connected)
	return wrap(mb)
}

// MeterConnection is MeterBroker for a further connection of the sidecar,
// the ambassador.brokers entry name, to a broker of system (see System):
// its series carry connection=name, and it has a connected gauge of its
// own. A name metered twice keeps its first gauge.
func MeterConnection(b broker.Broker, m *Metrics, name, system string) broker.Broker {
	mb := meter(b, m, system, name)
	gauge := connectedGauge(system, name, func() float64 {
		if mb.connected() {
			return 1
		}
		return 0
	})
	_ = m.Registry.Register(gauge) // only a name metered twice fails, and its first gauge stays
	return wrap(mb)
}

func meter(b broker.Broker, m *Metrics, system, connection string) *meteredBroker {
	mb := &meteredBroker{
		b:         b,
		published: m.BrokerMessages.WithLabelValues(system, connection, "publish"),
		received:  m.BrokerMessages.WithLabelValues(system, connection, "receive"),
		pubErrs:   m.BrokerErrors.WithLabelValues(system, connection, "publish"),
		subErrs:   m.BrokerErrors.WithLabelValues(system, connection, "subscribe"),
	}
	mb.connected = func() bool { return !mb.closed.Load() }
	if c, ok := b.(broker.Connectivity); ok {
		mb.connected = func() bool { return !mb.closed.Load() && c.Connected() }
	}
	return mb
}

// wrap returns mb as the broker it meters is: a broker.Returner too when
// that one is.
func wrap(mb *meteredBroker) broker.Broker {
	if r, ok := mb.b.(broker.Returner); ok {
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

// DeliveryTime implements broker.Latent with the wrapped broker's.
func (m *meteredBroker) DeliveryTime() time.Duration { return broker.DeliveryTime(m.b) }

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
