package discovery

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// rejections count the discovery messages and words a registry refuses,
// in busmesh_envelopes_rejected_total{component="discovery",reason}.
type rejections struct {
	malformed     prometheus.Counter // undecodable, oversize, or names that cannot be subjects
	foreign       prometheus.Counter // another sender's word about an instance
	unwanted      prometheus.Counter // about a service not watched
	instanceLimit prometheus.Counter // a new instance over the service's bound
	serviceLimit  prometheus.Counter // a service asked for over the bound
	pingLimit     prometheus.Counter // pings over an adapter's answer rate

	// The credential checks' reasons (checker) are counted by name.
	metrics *telemetry.Metrics
}

func newRejections(m *telemetry.Metrics) rejections {
	c := func(reason string) prometheus.Counter {
		if m == nil {
			return prometheus.NewCounter(prometheus.CounterOpts{Name: "unregistered"})
		}
		return m.EnvelopesRejected.WithLabelValues("discovery", reason)
	}
	return rejections{
		malformed:     c("malformed"),
		foreign:       c("foreign"),
		unwanted:      c("unwanted"),
		instanceLimit: c("instance-limit"),
		serviceLimit:  c("service-limit"),
		pingLimit:     c("ping-limit"),
		metrics:       m,
	}
}

// count counts a rejection by reason: unauthenticated, bad-signature,
// wrong-service, stale, or a certificate's (identity.Reason).
func (r rejections) count(reason string) {
	if r.metrics != nil {
		r.metrics.EnvelopesRejected.WithLabelValues("discovery", reason).Inc()
	}
}
