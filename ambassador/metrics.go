package ambassador

import (
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// record counts a call that ended, whatever its outcome: the one place the
// ambassador's request metrics are written.
func (a *Ambassador) record(c *Call) {
	service := ""
	if c.Route != nil {
		service = c.Route.Service
	}
	o := &c.out
	code := telemetry.Code(o.Status)
	if o.GRPC {
		code = telemetry.GRPCCode(o.Code)
	}
	a.metrics.AmbassadorRequests.WithLabelValues(service, code).Inc()
	switch o.Reason {
	case reason.None, reason.Cancelled:
		a.metrics.AmbassadorDuration.WithLabelValues(service).Observe(o.Latency.Seconds())
	default:
		text := o.ReasonText
		if text == "" {
			text = o.Reason.String()
		}
		a.metrics.AmbassadorErrors.WithLabelValues(service, text).Inc()
	}
}

// publishFailed counts and logs an envelope the ambassador could not send;
// the call it belonged to fails at once.
func (a *Ambassador) publishFailed(message, subject string, err error) {
	a.metrics.PublishErrors.WithLabelValues("ambassador", message).Inc()
	a.logger.Warn("publish failed: the call fails", telemetry.KeySubject, subject, "message", message, telemetry.KeyErr, err)
}
