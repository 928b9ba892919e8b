package telemetry

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"
)

// Metrics are a sidecar's Prometheus metrics, in a registry of its own (no
// globals: tests and the dev mode run several sidecars in one process).
type Metrics struct {
	Registry *prometheus.Registry

	// Ambassador side, by target service.
	AmbassadorRequests *prometheus.CounterVec   // service, code
	AmbassadorDuration *prometheus.HistogramVec // service
	AmbassadorErrors   *prometheus.CounterVec   // service, reason: the X-Busmesh-Error values
	// Mirrored counts calls copied to a mirror version; MirrorAnswers the
	// answers to them, which are dropped.
	Mirrored      *prometheus.CounterVec // service, version
	MirrorAnswers *prometheus.CounterVec // code
	// ConnectionsClosed counts connections an ambassador listener closed at
	// its connection limit.
	ConnectionsClosed *prometheus.CounterVec // listener, reason

	// Adapter side, by served service.
	AdapterRequests *prometheus.CounterVec   // service, code
	AdapterDuration *prometheus.HistogramVec // service
	AdapterInflight *prometheus.GaugeVec     // service
	// CallsReaped counts calls the adapter ended because their caller
	// vanished (it answered no liveness ping).
	CallsReaped *prometheus.CounterVec // service
	// PublishErrors counts envelopes a sidecar could not publish, by
	// component and message (request, response, frame).
	PublishErrors *prometheus.CounterVec // component, message

	// EnvelopesRejected counts what a sidecar took off the bus and dropped:
	// malformed, oversize, expired or unexpected envelopes.
	EnvelopesRejected *prometheus.CounterVec // component, reason
	// RepliesUnmatched counts replies for calls no longer waiting (they
	// timed out or were cancelled).
	RepliesUnmatched prometheus.Counter

	// AuthzDecisions counts the adapter's authorization decisions, by
	// calling service, served service and verdict (allow, deny).
	AuthzDecisions *prometheus.CounterVec // caller, service, verdict
	// Resilience: retries, budgets, breakers, ejections, duplicates.
	Resilience *Resilience
}

// Buckets of the request duration histograms, in seconds: from 100µs, as a
// mesh hop is measured in microseconds, to 30s, the default timeout.
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// NewMetrics registers busmesh's metrics, plus the Go and process
// collectors, in a new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry: r,
		AmbassadorRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_requests_total",
			Help: "Calls the ambassador answered, by target service and status code.",
		}, []string{"service", "code"}),
		AmbassadorDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "busmesh_ambassador_request_duration_seconds",
			Help:    "Time from a call's arrival at the ambassador to its response headers.",
			Buckets: durationBuckets,
		}, []string{"service"}),
		AmbassadorErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_errors_total",
			Help: "Calls the mesh itself answered, by service and X-Busmesh-Error reason.",
		}, []string{"service", "reason"}),
		Mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_mirrored_total",
			Help: "Calls copied to a mirror version, fire and forget, by service and version.",
		}, []string{"service", "version"}),
		MirrorAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_mirror_answers_total",
			Help: "Answers to mirrored calls, by status code; the callers never see them.",
		}, []string{"code"}),
		ConnectionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_connections_closed_total",
			Help: "Connections a listener closed at its connection limit: the longest idle one to make room (evicted-idle), or the new one when none was idle (refused).",
		}, []string{"listener", "reason"}),
		AdapterRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_adapter_requests_total",
			Help: "Calls the adapter served, by service and status code.",
		}, []string{"service", "code"}),
		AdapterDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "busmesh_adapter_request_duration_seconds",
			Help:    "Time the local application took to answer, to its response headers.",
			Buckets: durationBuckets,
		}, []string{"service"}),
		AdapterInflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "busmesh_adapter_inflight_requests",
			Help: "Calls the adapter is making to the application now.",
		}, []string{"service"}),
		CallsReaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_adapter_calls_reaped_total",
			Help: "Calls the adapter ended because their caller vanished without a word (no answer to liveness pings).",
		}, []string{"service"}),
		PublishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_publish_errors_total",
			Help: "Envelopes a sidecar could not publish, by component and message; each failed its call at once.",
		}, []string{"component", "message"}),
		EnvelopesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_envelopes_rejected_total",
			Help: "Envelopes taken off the bus and dropped, by component and reason.",
		}, []string{"component", "reason"}),
		RepliesUnmatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "busmesh_replies_unmatched_total",
			Help: "Replies that arrived for calls no longer waiting (timed out or cancelled).",
		}),
		AuthzDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_authz_decisions_total",
			Help: "The adapter's authorization decisions, by calling service, served service and verdict.",
		}, []string{"caller", "service", "verdict"}),
	}
	f(m.AuthzDecisions)
	f(m.AmbassadorRequests)
	f(m.AmbassadorDuration)
	f(m.AmbassadorErrors)
	f(m.ConnectionsClosed)
	f(m.Mirrored)
	f(m.MirrorAnswers)
	f(m.AdapterRequests)
	f(m.AdapterDuration)
	f(m.AdapterInflight)
	f(m.CallsReaped)
	f(m.PublishErrors)
	f(m.EnvelopesRejected)
	f(m.RepliesUnmatched)
	m.Resilience = newResilience(f)
	return m
}

// httpCodes holds the label value of every HTTP status, so that counting a
// request does not format a number.
var httpCodes = func() []string {
	c := make([]string, 600)
	for i := range c {
		c[i] = strconv.Itoa(i)
	}
	return c
}()

// Code returns the label value of an HTTP status code.
func Code(status int) string {
	if status >= 0 && status < len(httpCodes) {
		return httpCodes[status]
	}
	return strconv.Itoa(status)
}

// grpcCodes holds the label value of every gRPC code, "grpc_" and its name,
// so that counting a call does not build a string.
var grpcCodes = func() []string {
	c := make([]string, 17)
	for i := range c {
		c[i] = "grpc_" + codes.Code(i).String()
	}
	return c
}()

// GRPCCode returns the code label value of a gRPC status code.
func GRPCCode(code codes.Code) string {
	if int(code) < len(grpcCodes) {
		return grpcCodes[code]
	}
	return "grpc_" + code.String()
}
