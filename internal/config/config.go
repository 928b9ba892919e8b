package config

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Config is one sidecar's configuration file. A sidecar runs an ambassador,
// an adapter, or both, as the file's sections say.
type Config struct {
	// Mesh names the mesh the sidecar joins: every subject it uses starts
	// with busmesh.<mesh>., so meshes sharing a broker never see each
	// other. Default: default.
	Mesh string `yaml:"mesh"`
	// ID names this sidecar on the bus (its inbox is
	// busmesh.<mesh>.inbox.<id>).
	// Keep it stable across restarts. Default: <host>-<first listen port>.
	ID string `yaml:"id"`
	// Broker is the broker URL: embedded, nats://host:4222,
	// amqp://user:pass@host:5672/vhost, kafka://host:9092. Switching brokers
	// changes this line only.
	Broker string `yaml:"broker"`
	// Admin is the admin listener (/metrics, /healthz, /readyz); empty turns
	// it off.
	Admin string `yaml:"admin"`
	// Procs is how many CPUs the sidecar's Go runtime runs code on at once
	// (GOMAXPROCS); 0 means all the runtime sees. Default 1: a sidecar
	// shares its host with the application it serves, and on a busy host
	// one scheduler thread answers sooner than several contending ones.
	// The GOMAXPROCS environment variable, when set, wins.
	Procs int `yaml:"procs"`
	// Log configures logging.
	Log Log `yaml:"log"`
	// Identity is the sidecar's certified identity (see security.go); no
	// section runs without security, with a warning unless Insecure.
	Identity *Identity `yaml:"identity"`
	// Insecure says that running without an identity is intended: no
	// warning is logged.
	Insecure bool `yaml:"insecure"`
	// AdminToken guards the admin port's calls and state changes (see
	// internal/admin); BUSMESH_ADMIN_TOKEN sets it too.
	AdminToken string `yaml:"admin_token"`
	// Discovery configures how instances find each other.
	Discovery Discovery `yaml:"discovery"`
	// Tracing exports OpenTelemetry spans of the calls the sidecar carries;
	// off unless it names an endpoint.
	Tracing Tracing `yaml:"tracing"`
	// Ambassador, when present, takes calls from local applications.
	Ambassador *Ambassador `yaml:"ambassador"`
	// Adapter, when present, serves a local application to the mesh.
	Adapter *Adapter `yaml:"adapter"`
}

// Log configures the sidecar's log/slog output on stderr.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
	// Access configures the access log: one JSON line per call.
	Access AccessLog `yaml:"access"`
}

// AccessLog is the opt-in access log: one JSON line per call, on stderr
// with the other logs, whatever the log level.
type AccessLog struct {
	// Enabled turns the access log on.
	Enabled bool `yaml:"enabled"`
	// Sample is the share of calls logged, from 0 to 1 (default 1: all).
	Sample float64 `yaml:"sample"`
}

// Tracing configures the OpenTelemetry trace exporter.
type Tracing struct {
	// Endpoint is the OTLP collector's URL: http://127.0.0.1:4317 for
	// gRPC, http://127.0.0.1:4318/v1/traces for HTTP (https:// for TLS).
	// Empty turns tracing off.
	Endpoint string `yaml:"endpoint"`
	// Protocol is grpc or http (OTLP over HTTP with protobuf). Default grpc.
	Protocol string `yaml:"protocol"`
	// Sampler decides which traces are recorded: parentbased_traceidratio
	// (the default: follow the caller's decision, else sample Ratio of new
	// traces), traceidratio, always_on or always_off.
	Sampler string `yaml:"sampler"`
	// Ratio is the share of traces sampled, from 0 to 1 (default 1).
	Ratio float64 `yaml:"ratio"`
}

// The tracing samplers.
const (
	SamplerParentRatio = "parentbased_traceidratio"
	SamplerRatio       = "traceidratio"
	SamplerAlwaysOn    = "always_on"
	SamplerAlwaysOff   = "always_off"
)

// Discovery configures announcements on busmesh.<mesh>.discovery.svc.<service>.
type Discovery struct {
	// Interval is how often an adapter announces itself; an instance not
	// heard from for three intervals is forgotten.
	Interval Duration `yaml:"interval"`
}

// Ambassador is the client side: local ports that carry calls to services.
type Ambassador struct {
	// Service is the identity of the application calling through this
	// ambassador (the source service of its calls).
	Service string `yaml:"service"`
	// HTTP is the shared HTTP port; the service is named by the Host header
	// ("orders" or "orders.mesh"). Empty turns it off.
	HTTP string `yaml:"http"`
	// Upstreams gives services their own local port: a legacy app that
	// called http://orders-host:8080 now calls this address.
	Upstreams map[string]string `yaml:"upstreams"`
	// GRPC is the gRPC port: it forwards any method; the service is named by
	// the :authority ("orders" or "orders.mesh") or by GRPCRoutes.
	GRPC string `yaml:"grpc"`
	// GRPCRoutes maps method prefixes to services: {"shop.orders.v1.":
	// orders} sends /shop.orders.v1.Orders/Get to orders. The longest
	// matching prefix wins over the :authority.
	GRPCRoutes map[string]string `yaml:"grpc_routes"`
	// Timeout is the deadline of a call without X-Busmesh-Timeout (or a gRPC
	// deadline). For a call that asks for Server-Sent Events, and for a
	// gRPC call whose caller set no deadline, it bounds only the wait for
	// the answer's head.
	Timeout Duration `yaml:"timeout"`
	// IdleTimeout ends an HTTP call, stream or upgraded connection when no
	// byte has moved in either direction for this long (default 5m; "none"
	// turns it off). It matters where the deadline is long or none. gRPC
	// calls have none: a quiet stream lasts as its caller wants.
	IdleTimeout Timeout `yaml:"idle_timeout"`
	// MaxBodyBytes caps request bodies: a larger one gets 413. 0, the
	// default, is no cap: bodies stream under flow control.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// MaxResponseBytes caps response bodies: a larger one gets 502 before
	// its status is sent, or is aborted after. 0, the default, is no cap.
	MaxResponseBytes ByteSize `yaml:"max_response_bytes"`
	// LB is the load balancing of services without their own: queue or
	// direct.
	LB string `yaml:"lb"`
	// Services sets how calls to a service are balanced.
	Services map[string]*ServicePolicy `yaml:"services"`
	// Brokers are more broker connections, by name, that a service's
	// mirror can copy calls to (mirror: {broker: shadow, percent: 10}) and
	// its calls can be split over (services.<s>.brokers: {primary: 90,
	// shadow: 10}): the same service on another broker, to canary a broker
	// migration. They open at start; a change takes a restart.
	Brokers map[string]string `yaml:"brokers"`
	// MaxConnections bounds each listener's connections; at the limit a
	// new connection takes the place of the longest idle one. 0: 2,048,
	// or a quarter of the file descriptors if less.
	MaxConnections int `yaml:"max_connections"`
}

// The load-balancing modes.
const (
	// LBQueue lets the broker spread calls over the service's queue group;
	// each adapter takes only as many as it can serve.
	LBQueue = "queue"
	// LBDirect has the ambassador pick an instance (power of two choices
	// over peak-EWMA latency times calls in flight) and send to it alone.
	LBDirect = "direct"
)

// ServicePolicy is how an ambassador sends calls to one service.
type ServicePolicy struct {
	// LB is queue or direct; the ambassador's lb when empty.
	LB string `yaml:"lb"`
	// PreferZone, in direct mode, sends calls to instances in this zone
	// while any of them is healthy.
	PreferZone string `yaml:"prefer_zone"`
	// Version sends calls only to instances of this version: in queue mode
	// to the version's own queue group, in direct mode by the pick.
	Version string `yaml:"version"`
	// Routes send matching calls to a version, before the split; the
	// first that matches wins.
	Routes []TrafficRoute `yaml:"routes"`
	// Split spreads the other calls over versions by weight: {v1: 90,
	// v2: 10}.
	Split map[string]int `yaml:"split"`
	// Sticky names a request header whose value picks the split's version
	// by its hash, so one user stays on one version.
	Sticky string `yaml:"sticky"`
	// Fallback is what a call whose version has no healthy instance does:
	// any (the default: to any version) or none (503 no-healthy-instances).
	Fallback string `yaml:"fallback"`
	// Mirror copies a share of the calls to a version, fire and forget:
	// their answers are counted and discarded.
	Mirror *Mirror `yaml:"mirror"`
	// Brokers spreads the calls over broker connections by percentage:
	// PrimaryBroker (the sidecar's own) and ambassador.brokers names,
	// adding up to 100 ({primary: 90, kafka: 10}). Calls on another broker
	// are real calls, answered to the caller; in direct mode the instance
	// is picked among those discovery sees over that broker. Empty: all
	// on the primary.
	Brokers map[string]int `yaml:"brokers"`
	// Seal encrypts the calls to the service, not only authenticates them
	// (needs an identity; see docs/security.md): the broker sees ciphertext.
	Seal bool `yaml:"seal"`
	// Timeout is the deadline of the service's calls without
	// X-Busmesh-Timeout; "none" for no deadline (streams, long polls,
	// WebSockets). Unset: the ambassador's timeout.
	Timeout Timeout `yaml:"timeout"`
	// IdleTimeout is the service's idle timeout; unset: the ambassador's.
	IdleTimeout Timeout `yaml:"idle_timeout"`
	// MaxBodyBytes and MaxResponseBytes cap the service's request and
	// response bodies; 0: the ambassador's caps.
	MaxBodyBytes     ByteSize `yaml:"max_body_bytes"`
	MaxResponseBytes ByteSize `yaml:"max_response_bytes"`
	// Retry, Breaker (the service's), InstanceBreaker (each instance's,
	// direct mode) and Outlier (ejection, direct mode) make calls to the
	// service fault tolerant; a section left out takes its defaults.
	Retry           *Retry   `yaml:"retry"`
	Breaker         *Breaker `yaml:"breaker"`
	InstanceBreaker *Breaker `yaml:"instance_breaker"`
	Outlier         *Outlier `yaml:"outlier"`
}

// TrafficRoute sends the calls it matches to one version.
type TrafficRoute struct {
	Match   TrafficMatch `yaml:"match"`
	Version string       `yaml:"version"`
}

// TrafficMatch is what a route matches; every set field must match.
type TrafficMatch struct {
	// Headers are exact header (or gRPC metadata) values.
	Headers map[string]string `yaml:"headers"`
	// PathPrefix matches an HTTP path.
	PathPrefix string `yaml:"path_prefix"`
	// GRPCMethod matches a full gRPC method by prefix ("/shop.Orders/").
	GRPCMethod string `yaml:"grpc_method"`
	// Caller matches the calling application's service (ambassador.service).
	Caller string `yaml:"caller"`
}

// Mirror copies a share of a service's calls to a version, or to the
// same service (a version of it, when set) on another broker.
type Mirror struct {
	Version string `yaml:"version"`
	// Broker names an ambassador.brokers entry: the copies go there.
	Broker  string `yaml:"broker"`
	Percent int    `yaml:"percent"`
}

// PrimaryBroker is the name of the sidecar's own broker in a service's
// brokers weights (and the to_broker metrics label); ambassador.brokers
// may not use it.
const PrimaryBroker = "primary"

// The fallbacks of a version without healthy instances.
const (
	FallbackAny  = "any"
	FallbackNone = "none"
)

// Adapter is the server side: it takes the service's calls off the bus and
// makes them to the local application.
type Adapter struct {
	// Service is the name the application is called by.
	Service string `yaml:"service"`
	// Instance names this instance of the service. Default: the sidecar ID.
	Instance string `yaml:"instance"`
	// Version is the application's version, for version-aware routing.
	Version string `yaml:"version"`
	// Zone is where the instance runs, for zone-aware routing.
	Zone string `yaml:"zone"`
	// Labels are free-form key/value pairs announced with the instance.
	Labels map[string]string `yaml:"labels"`
	// Target is the local application: http://127.0.0.1:8080, or
	// grpc://127.0.0.1:9090 for a gRPC server; https:// and grpcs:// speak
	// TLS to it (see TLS).
	Target string `yaml:"target"`
	// TLS is how the adapter checks an https:// or grpcs:// application and
	// shows itself to one. No section: the system's roots and the target's
	// host name, no client certificate.
	TLS *AppTLS `yaml:"tls"`
	// Host is the Host header the application gets: HostCaller (the
	// default) passes the caller's, as a transparent proxy does; HostTarget
	// sends the target's own host, for an application that answers only to
	// its own name (a Host allowlist) or serves virtual hosts a caller must
	// not pick. X-Forwarded-Host carries the caller's either way.
	Host string `yaml:"host"`
	// Concurrency bounds the calls in flight to the application; more wait
	// on the broker.
	Concurrency int `yaml:"concurrency"`
	// MaxBodyBytes caps the application's response bodies: a larger one
	// gets 502 before its status is sent, or is aborted after. 0, the
	// default, is no cap. gRPC messages may be up to the larger of 4 MiB
	// and this.
	MaxBodyBytes ByteSize `yaml:"max_body_bytes"`
	// Health checks the application; while it fails, the adapter takes no
	// calls and announces itself unhealthy. No section: always healthy.
	Health *Health `yaml:"health"`
	// Allow lists the callers allowed to call this service and what they
	// may call (see security.go). No rules: every caller may call
	// anything; once there is one, what no rule allows is denied.
	Allow []AllowRule `yaml:"allow"`
	// Seal takes only sealed requests (encrypted, see docs/security.md);
	// their answers are sealed too. Needs an identity.
	Seal bool `yaml:"seal"`
	// Outlier is self-ejection: when the application's answers fail
	// Consecutive times in a row (5xx, gRPC UNAVAILABLE and the like, the
	// application unreachable), the adapter leaves its service for
	// BaseEjection × the number of times it was out, at most MaxEjection,
	// unless its service has MaxEjectedPercent of its instances out (at
	// least one of two or more) or no other healthy one. In queue mode the
	// broker picks the instance, so only the instance can step aside.
	// Default on (5, 30s, 300s, 10); consecutive: 0 turns it off.
	Outlier *Outlier `yaml:"outlier"`
}

// Health is the adapter's check of its application.
type Health struct {
	// HTTP is a path to GET on an HTTP application; 2xx and 3xx are
	// healthy.
	HTTP string `yaml:"http"`
	// GRPC checks a gRPC application with the standard health protocol
	// (grpc.health.v1), for GRPCService ("" is the whole server).
	GRPC        bool   `yaml:"grpc"`
	GRPCService string `yaml:"grpc_service"`
	// Interval is the time between checks; Timeout bounds one.
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	// UnhealthyAfter consecutive failures make the application unhealthy;
	// HealthyAfter consecutive successes make it healthy again.
	UnhealthyAfter int `yaml:"unhealthy_after"`
	HealthyAfter   int `yaml:"healthy_after"`
}

// The values of Adapter.Host.
const (
	HostCaller = "caller"
	HostTarget = "target"
)

// Defaults.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultIdleTimeout = 5 * time.Minute
	DefaultConcurrency = 128
	DefaultBroker      = "embedded"
	DefaultMesh        = "default"
	DefaultInterval    = 2 * time.Second
)

// Default returns a Config with every default set and no sections.
func Default() *Config {
	return &Config{
		Mesh:    DefaultMesh,
		Broker:  DefaultBroker,
		Procs:   1,
		Log:     Log{Level: "info", Format: "json", Access: AccessLog{Sample: 1}},
		Tracing: Tracing{Protocol: "grpc", Sampler: SamplerParentRatio, Ratio: 1},
		Discovery: Discovery{
			Interval: Duration(DefaultInterval),
		},
	}
}

// NewAmbassador returns an ambassador section with its defaults.
func NewAmbassador() *Ambassador {
	a := &Ambassador{}
	a.setDefaults()
	return a
}

// NewAdapter returns an adapter section with its defaults.
func NewAdapter() *Adapter {
	a := &Adapter{}
	a.setDefaults()
	return a
}

// setDefaults is called on a section when the file creates it, before its
// keys are decoded.
type defaulter interface{ setDefaults() }

func (a *Ambassador) setDefaults() {
	a.Timeout = Duration(DefaultTimeout)
	a.IdleTimeout = Timeout(DefaultIdleTimeout)
	a.LB = LBQueue
}

func (h *Health) setDefaults() {
	h.Interval = Duration(time.Second)
	h.Timeout = Duration(time.Second)
	h.UnhealthyAfter = 2
	h.HealthyAfter = 1
}

// Policy returns the policy of calls to service: its own entry, with the
// ambassador's lb, timeouts and caps where the entry leaves them unset.
func (a *Ambassador) Policy(service string) ServicePolicy {
	var p ServicePolicy
	if sp := a.Services[service]; sp != nil {
		p = *sp
	}
	if p.LB == "" {
		p.LB = a.LB
	}
	if p.LB == "" {
		p.LB = LBQueue
	}
	if p.Timeout == 0 {
		p.Timeout = Timeout(a.Timeout)
	}
	if p.IdleTimeout == 0 {
		p.IdleTimeout = a.IdleTimeout
	}
	if p.MaxBodyBytes == 0 {
		p.MaxBodyBytes = a.MaxBodyBytes
	}
	if p.MaxResponseBytes == 0 {
		p.MaxResponseBytes = a.MaxResponseBytes
	}
	p.withResilienceDefaults()
	return p
}

func (a *Adapter) setDefaults() {
	a.Concurrency = DefaultConcurrency
	a.Outlier = NewOutlier()
}

// Load reads a config file in the fixed order: defaults, the file,
// BUSMESH_* environment overrides, Normalize, Validate. The error lists
// every problem, each with its key, value and what is allowed.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseEnviron(path, data, os.Environ())
}

// ParseEnviron is Parse with the overrides taken from environ ("KEY=value"
// entries, as os.Environ returns); a BUSMESH_ variable that names no key is
// a problem too, reported with the nearest real one.
func ParseEnviron(name string, data []byte, environ []string) (*Config, error) {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return parse(name, data, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, environ)
}

// Parse is Load for a file already read; name labels errors and lookupEnv
// supplies the overrides (os.LookupEnv, or a map in tests).
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(name, data, lookupEnv, nil)
}

func parse(name string, data []byte, lookupEnv func(string) (string, bool), environ []string) (*Config, error) {
	c := Default()
	errs := &Error{File: name, lines: map[string]int{}}
	// Every stage runs even after problems, so the error lists them all; a
	// value that failed to decode keeps its (valid) default.
	decodeYAML(data, c, errs)
	applyEnv(c, lookupEnv, errs)
	checkEnvNames(environ, errs)
	c.Normalize()
	c.validate(errs)
	if len(errs.Problems) > 0 {
		// In file order; problems with no line (overrides, derived keys) last.
		slices.SortStableFunc(errs.Problems, func(a, b Problem) int {
			return cmp.Compare(lineOrder(a.Line), lineOrder(b.Line))
		})
		return nil, errs
	}
	return c, nil
}

func lineOrder(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}
