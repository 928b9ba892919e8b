package telemetry

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"
)

// Metrics are a sidecar's Prometheus metrics, in a registry of its own (no
// globals: tests and the dev mode run several sidecars in one process).
//
// The request metrics are golden metrics per edge: by caller, service,
// instance, broker (a constant label of the sidecar), protocol, status
// class and code. Label values are bounded: a service no instance has
// announced and the config does not name is counted as Unknown, and so is
// a caller or instance beyond what a sidecar may plausibly see (Bounded).
type Metrics struct {
	Registry *prometheus.Registry

	// Ambassador side: calls this sidecar's applications made.
	AmbassadorRequests *prometheus.CounterVec   // caller, service, instance, protocol, class, code, grpc_code
	AmbassadorDuration *prometheus.HistogramVec // caller, service, instance, protocol
	AmbassadorErrors   *prometheus.CounterVec   // caller, service, reason: the X-Busmesh-Error values
	AmbassadorInflight *prometheus.GaugeVec     // caller, service
	// Mirrored counts calls copied to a mirror version; MirrorAnswers the
	// answers to them, which are dropped. to_broker is "primary" (the
	// sidecar's own broker) or an ambassador.brokers name.
	Mirrored      *prometheus.CounterVec // service, version, to_broker
	MirrorAnswers *prometheus.CounterVec // code, to_broker
	// MirrorDropped counts copies not sent: the broker's queue was full
	// (queue_full) or its publish failed (publish_failed).
	MirrorDropped *prometheus.CounterVec // service, to_broker, reason
	// BrokerCalls counts the calls of services split over brokers (their
	// brokers weights), by the broker each went over and its outcome's
	// class: to_broker is bounded by the brokers opened at start.
	BrokerCalls *prometheus.CounterVec // service, to_broker, class
	// ConnectionsClosed counts connections an ambassador listener closed at
	// its connection limit.
	ConnectionsClosed *prometheus.CounterVec // listener, reason

	// Adapter side: calls this sidecar's service served.
	AdapterRequests *prometheus.CounterVec   // caller, service, instance, protocol, class, code, grpc_code
	AdapterDuration *prometheus.HistogramVec // caller, service, instance, protocol
	AdapterInflight *prometheus.GaugeVec     // service
	// CallsReaped counts calls the adapter ended because their caller
	// vanished (it answered no liveness ping).
	CallsReaped *prometheus.CounterVec // service
	// PublishErrors counts envelopes a sidecar could not publish, by
	// component and message (request, response, frame).
	PublishErrors *prometheus.CounterVec // component, message

	// Broker traffic, by a decorator around broker.Broker (MeterBroker,
	// MeterConnection), per connection: the sidecar's own broker
	// (PrimaryConnection) and each of ambassador.brokers, by its name.
	BrokerMessages *prometheus.CounterVec // broker, connection, operation: publish, receive
	BrokerErrors   *prometheus.CounterVec // broker, connection, operation: publish, subscribe
	// connected says whether the primary connection is up, for its
	// busmesh_broker_connected gauge (MeterBroker sets it).
	connected atomic.Pointer[func() bool]

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
	// Window is the recent traffic per edge, for `busmesh top`; the record
	// functions feed it with the same calls as the counters.
	Window *Window
	// Broker is the broker system label value: nats, kafka or rabbitmq.
	Broker string
}

// Label values shared by both sidecars.
const (
	// Unknown stands for a service, caller or instance that may not
	// become a label value of its own: one bucket for them all.
	Unknown = "unknown"
	// ProtocolHTTP and ProtocolGRPC are the protocol label values.
	ProtocolHTTP = "http"
	ProtocolGRPC = "grpc"
)

// Buckets of the request duration histograms, in seconds: from 100µs, as a
// mesh hop is measured in microseconds, to 30s, the default timeout.
var durationBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// MetricsOption sets something about a sidecar's metrics.
type MetricsOption func(*metricsOptions)

type metricsOptions struct {
	broker, version string
}

// WithBroker sets the broker label of every request and broker metric:
// the broker system (nats, kafka, rabbitmq; see System).
func WithBroker(system string) MetricsOption {
	return func(o *metricsOptions) { o.broker = system }
}

// WithVersion sets the version label of busmesh_build_info.
func WithVersion(v string) MetricsOption {
	return func(o *metricsOptions) { o.version = v }
}

// NewMetrics registers busmesh's metrics, plus the Go and process
// collectors, in a new registry.
func NewMetrics(opts ...MetricsOption) *Metrics {
	o := metricsOptions{version: "dev"}
	for _, f := range opts {
		f(&o)
	}
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	var constLabels prometheus.Labels
	if o.broker != "" {
		constLabels = prometheus.Labels{"broker": o.broker}
	}
	edge := []string{"caller", "service", "instance", "protocol", "class", "code", "grpc_code"}
	latency := []string{"caller", "service", "instance", "protocol"}
	histogram := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        name,
			Help:        help,
			ConstLabels: constLabels,
			Buckets:     durationBuckets,
			// Native histograms too, for scrapers that take them: buckets
			// 10% apart, at most 160 of them per series.
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  160,
			NativeHistogramMinResetDuration: time.Hour,
		}, latency)
	}
	m := &Metrics{
		Registry: r,
		Broker:   o.broker,
		Window:   NewWindow(DefaultWindow),
		AmbassadorRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "busmesh_ambassador_requests_total",
			Help:        "Calls the ambassador answered, by edge (caller, service, instance), protocol, status class and code (HTTP status in code, gRPC code name in grpc_code).",
			ConstLabels: constLabels,
		}, edge),
		AmbassadorDuration: histogram("busmesh_ambassador_request_duration_seconds",
			"Time from a call's arrival at the ambassador to its response headers (or its failure), by edge."),
		AmbassadorErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "busmesh_ambassador_errors_total",
			Help:        "Calls the mesh itself answered, by caller, service and X-Busmesh-Error reason.",
			ConstLabels: constLabels,
		}, []string{"caller", "service", "reason"}),
		AmbassadorInflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        "busmesh_ambassador_inflight_requests",
			Help:        "Calls the ambassador is carrying now, by caller and service.",
			ConstLabels: constLabels,
		}, []string{"caller", "service"}),
		Mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_mirrored_total",
			Help: "Calls copied to a mirror, fire and forget, by service, version and the broker they went over (primary, or an ambassador.brokers name).",
		}, []string{"service", "version", "to_broker"}),
		MirrorAnswers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_mirror_answers_total",
			Help: "Answers to mirrored calls, by status code and the broker they came over; the callers never see them.",
		}, []string{"code", "to_broker"}),
		MirrorDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_mirror_dropped_total",
			Help: "Mirror copies not sent, by service, broker and reason: queue_full (the broker is not keeping up) or publish_failed.",
		}, []string{"service", "to_broker", "reason"}),
		BrokerCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_broker_calls_total",
			Help: "Calls of services split over brokers (brokers weights), by service, the broker each went over (primary, or an ambassador.brokers name) and status class.",
		}, []string{"service", "to_broker", "class"}),
		ConnectionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_ambassador_connections_closed_total",
			Help: "Connections a listener closed at its connection limit: the longest idle one to make room (evicted-idle), or the new one when none was idle (refused).",
		}, []string{"listener", "reason"}),
		AdapterRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "busmesh_adapter_requests_total",
			Help:        "Calls the adapter served, by edge (caller, service, instance), protocol, status class and code (HTTP status in code, gRPC code name in grpc_code).",
			ConstLabels: constLabels,
		}, edge),
		AdapterDuration: histogram("busmesh_adapter_request_duration_seconds",
			"Time the local application took to answer, to its response headers (or the call's failure), by edge."),
		AdapterInflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        "busmesh_adapter_inflight_requests",
			Help:        "Calls the adapter is making to the application now.",
			ConstLabels: constLabels,
		}, []string{"service"}),
		CallsReaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_adapter_calls_reaped_total",
			Help: "Calls the adapter ended because their caller vanished without a word (no answer to liveness pings).",
		}, []string{"service"}),
		PublishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_publish_errors_total",
			Help: "Envelopes a sidecar could not publish, by component and message; each failed its call at once.",
		}, []string{"component", "message"}),
		BrokerMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_broker_messages_total",
			Help: "Messages published to and received from a broker, by connection (primary: the sidecar's own; else an ambassador.brokers name).",
		}, brokerLabels),
		BrokerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "busmesh_broker_errors_total",
			Help: "Broker operations that failed, by connection and operation (publish, subscribe).",
		}, brokerLabels),
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
	f(m.AmbassadorInflight)
	f(m.AdapterRequests)
	f(m.AdapterDuration)
	f(m.AdapterInflight)
	f(m.BrokerMessages)
	f(m.BrokerErrors)
	f(connectedGauge(o.broker, PrimaryConnection, m.brokerConnected))
	f(m.ConnectionsClosed)
	f(m.Mirrored)
	f(m.MirrorAnswers)
	f(m.MirrorDropped)
	f(m.BrokerCalls)
	f(m.CallsReaped)
	f(m.PublishErrors)
	f(m.EnvelopesRejected)
	f(m.RepliesUnmatched)
	m.Resilience = newResilience(f)
	f(buildInfo(o.version))
	return m
}

// brokerLabels are the variable labels of the broker traffic counters:
// the broker system, the connection's name, the operation.
var brokerLabels = []string{"broker", "connection", "operation"}

// connectedGauge is busmesh_broker_connected for one connection: the
// value of up, 1 or 0.
func connectedGauge(system, connection string, up func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "busmesh_broker_connected",
		Help:        "1 while a broker connection is up (as the backend knows it, else from open to close), else 0, by connection (primary: the sidecar's own; else an ambassador.brokers name).",
		ConstLabels: prometheus.Labels{"broker": system, "connection": connection},
	}, up)
}

func (m *Metrics) brokerConnected() float64 {
	if f := m.connected.Load(); f != nil && (*f)() {
		return 1
	}
	return 0
}

// buildInfo is busmesh_build_info: 1, labelled with the version, the VCS
// revision and the Go version the binary was built with.
func buildInfo(version string) prometheus.Collector {
	revision := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "busmesh_build_info",
		Help:        "1, labelled with the busmesh version, VCS revision and Go version of the binary.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	g.Set(1)
	return g
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

// GRPCCode returns the grpc_code label value of a gRPC status code: its
// name ("OK", "DeadlineExceeded").
func GRPCCode(code codes.Code) string {
	if int(code) < len(grpcClasses) {
		return grpcNames[code]
	}
	return Unknown
}

var grpcNames = func() []string {
	c := make([]string, len(grpcClasses))
	for i := range c {
		c[i] = codes.Code(i).String()
	}
	return c
}()

// The class label values: one vocabulary for both protocols. A gRPC code
// takes the class of the HTTP status gRPC gateways map it to.
var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// grpcClasses is the HTTP status class of each gRPC code.
var grpcClasses = [...]uint8{
	codes.OK:                 2,
	codes.Canceled:           4, // 499
	codes.Unknown:            5,
	codes.InvalidArgument:    4,
	codes.DeadlineExceeded:   5, // 504
	codes.NotFound:           4,
	codes.AlreadyExists:      4,
	codes.PermissionDenied:   4,
	codes.ResourceExhausted:  4, // 429
	codes.FailedPrecondition: 4,
	codes.Aborted:            4, // 409
	codes.OutOfRange:         4,
	codes.Unimplemented:      5, // 501
	codes.Internal:           5,
	codes.Unavailable:        5, // 503
	codes.DataLoss:           5,
	codes.Unauthenticated:    4,
}

// Class returns the class label value of an HTTP status ("2xx"), or of a
// gRPC code when grpc is set.
func Class(status int, grpc bool, code codes.Code) string {
	if grpc {
		if int(code) < len(grpcClasses) {
			return classes[grpcClasses[code]-1]
		}
		return "5xx"
	}
	if c := status / 100; c >= 1 && c <= 5 {
		return classes[c-1]
	}
	return "5xx"
}

// Success reports whether a class counts as a success: anything but a
// server error (5xx), as the success-rate queries in docs/monitoring.md.
func Success(class string) bool { return class != "5xx" }
