package ambassador

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// maxInstances bounds the instance label: answers name their instance, and
// a label value is admitted only for the first maxInstances names.
const maxInstances = 4096

// labels are what the ambassador's metrics say about the calls of a
// sidecar: who calls (one caller per ambassador) and the bounded sets of
// services and instances admitted as label values.
type labels struct {
	caller    string
	services  telemetry.Bounded // services that may be label values
	instances telemetry.Bounded

	requests  telemetry.Children[requestLabels, prometheus.Counter]
	durations telemetry.Children[durationLabels, prometheus.Observer]
}

// requestLabels are the label values of a call's request counter.
type requestLabels struct{ caller, service, instance, protocol, class, code, grpcCode string }

// durationLabels are those of its duration histogram.
type durationLabels struct{ caller, service, instance, protocol string }

func newLabels(caller string) *labels {
	if caller == "" {
		caller = telemetry.Unknown
	}
	return &labels{caller: caller, services: telemetry.Bounded{Max: maxInstances}, instances: telemetry.Bounded{Max: maxInstances}}
}

// serviceLabel is the service label of a call on rt: its service when the
// config names it or some instance of it has announced itself, else
// Unknown, so that a Host header naming nothing adds no series.
func (a *Ambassador) serviceLabel(rt *Route) string {
	if rt == nil {
		return telemetry.Unknown
	}
	s := rt.Service
	if a.labels.services.Known(s) {
		return s
	}
	if a.table.Load().services[s] != nil || (a.reg != nil && a.reg.Has(s)) {
		return a.labels.services.Admit(s)
	}
	return telemetry.Unknown
}

// started counts a call in flight on its edge, from begin.
func (a *Ambassador) started(c *Call) {
	service := a.serviceLabel(c.Route)
	caller := a.labels.caller
	c.edge = a.metrics.Window.Edge(telemetry.EdgeKey{Side: telemetry.SideAmbassador, Caller: caller, Service: service},
		func() prometheus.Gauge { return a.metrics.AmbassadorInflight.WithLabelValues(caller, service) })
	c.edge.Start()
}

// relabel moves a call counted under the Unknown service to its
// service's edge once the service is known: a service no route names is
// learnt on its first call, after started had to label it. requireHealthy
// calls it once discovery found an instance, record for a call that
// failed first; the service is looked for once.
func (a *Ambassador) relabel(c *Call) {
	if c.relabeled || c.edge.Key().Service != telemetry.Unknown {
		return
	}
	c.relabeled = true
	if a.serviceLabel(c.Route) == telemetry.Unknown {
		return
	}
	c.edge.Leave()
	a.started(c)
}

// record counts a call that ended, whatever its outcome: the one place the
// ambassador's request metrics are written (and the window of its edge
// fed).
func (a *Ambassador) record(c *Call) {
	a.relabel(c)
	o := &c.out
	caller, service := c.edge.Key().Caller, c.edge.Key().Service
	instance := ""
	if name := c.p.resp.Instance; name != "" {
		instance = a.labels.instances.Admit(name)
	}
	protocol, code, grpcCode := telemetry.ProtocolHTTP, telemetry.Code(o.Status), ""
	if o.GRPC {
		protocol, code, grpcCode = telemetry.ProtocolGRPC, "", telemetry.GRPCCode(o.Code)
	}
	class := telemetry.Class(o.Status, o.GRPC, o.Code)
	m := a.metrics
	a.labels.requests.Get(requestLabels{caller, service, instance, protocol, class, code, grpcCode}, func() prometheus.Counter {
		return m.AmbassadorRequests.WithLabelValues(caller, service, instance, protocol, class, code, grpcCode)
	}).Inc()
	a.labels.durations.Get(durationLabels{caller, service, instance, protocol}, func() prometheus.Observer {
		return m.AmbassadorDuration.WithLabelValues(caller, service, instance, protocol)
	}).Observe(o.Latency.Seconds())
	if o.Reason != reason.None {
		m.AmbassadorErrors.WithLabelValues(caller, service, o.Reason.String()).Inc()
	}
	if c.Route != nil && c.Route.traffic != nil && len(c.Route.traffic.lanes) > 0 && c.lane != nil {
		m.BrokerCalls.WithLabelValues(service, c.lane.name, class).Inc()
	}
	c.edge.Done(!telemetry.Success(class), o.Latency)
}

// publishFailed counts and logs an envelope the ambassador could not send;
// the call it belonged to fails at once.
func (a *Ambassador) publishFailed(message, subject string, err error) {
	a.metrics.PublishErrors.WithLabelValues("ambassador", message).Inc()
	a.logger.Warn("publish failed: the call fails", telemetry.KeySubject, subject, "message", message, telemetry.KeyErr, err)
}
