package adapter

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/grpcwire"
	"github.com/busmesh/busmesh/internal/policy"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Options configure an Adapter.
type Options struct {
	Config  *config.Adapter
	Sidecar string // this sidecar's ID, which names its inbox
	Mesh    string // the mesh's name; "" is broker.DefaultMesh
	Broker  broker.Broker
	Logger  *slog.Logger // nil discards
	Metrics *telemetry.Metrics
	// Announce is the discovery announcement interval (default 2s).
	Announce time.Duration
	// Security authenticates what the adapter takes and seals what it
	// sends; nil runs without (see package secure).
	Security *secure.Guard
	// Tracer, when set, makes a server span of every call, a child of the
	// ambassador's, and hands its trace context to the application; nil
	// leaves tracing off.
	Tracer *telemetry.Tracer
	// Access, when set, writes one access log line per call (sampled).
	Access *telemetry.AccessLog
}

// Adapter takes a service's calls off the broker and makes them to the
// local application. Its parts live in files of their own: lifecycle
// (Start, Shutdown, the queue group), admission (what may be served),
// workers, the table of calls being served, the application (app) and its
// health checks.
type Adapter struct {
	cfg      *config.Adapter
	sidecar  string
	subjects broker.Subjects
	inbox    string // subjects.AdapterInbox: frames of the calls it serves
	broker   broker.Broker
	pub      *bus.Publisher
	logger   *slog.Logger
	metrics  *telemetry.Metrics
	limiter  telemetry.Limiter
	inflight prometheus.Gauge
	app      app
	chunk    int
	announce *discovery.Announcer
	admit    []admission    // checks on a request before a worker takes it
	guard    *secure.Guard  // nil: security off
	policy   *policy.Policy // nil: every caller allowed
	latency  telemetry.LatencyWindow
	tracer   *telemetry.Tracer
	access   *telemetry.AccessLog
	callers  telemetry.Bounded // callers admitted as label values

	requests  telemetry.Children[requestLabels, prometheus.Counter] // a call's metrics by its labels (calls.go)
	durations telemetry.Children[durationLabels, prometheus.Observer]
	services  natsServices // the NATS services protocol ($SRV), on NATS

	pool    *workers
	streams streamSet
	budget  *stream.Budget // credit of the request bodies streaming in
	calls   callTable
	results results // answers kept for retries (duplicates.go)
	life    lifecycle
	gate    servingGate // whether it takes calls: healthy and not stepped aside
	eject   ejector     // self-ejection (ejection.go)
}

// New returns an Adapter; Start subscribes it.
func New(o Options) (*Adapter, error) {
	o.Logger = telemetry.OrDiscard(o.Logger)
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	if o.Announce <= 0 {
		o.Announce = config.DefaultInterval
	}
	subjects := broker.NewSubjects(o.Mesh)
	pub := bus.NewPublisher(o.Broker)
	if o.Security != nil {
		pub.SetSealer(o.Security)
	}
	a := &Adapter{
		cfg:      o.Config,
		sidecar:  o.Sidecar,
		subjects: subjects,
		inbox:    subjects.AdapterInbox(o.Sidecar),
		broker:   o.Broker,
		pub:      pub,
		logger:   o.Logger.With(telemetry.KeyComponent, "adapter", telemetry.KeyService, o.Config.Service),
		metrics:  o.Metrics,
		limiter:  telemetry.Limiter{Interval: time.Second},
		inflight: o.Metrics.AdapterInflight.WithLabelValues(o.Config.Service),
		chunk:    stream.ChunkSize(pub.MaxMessage()),
		calls:    callTable{m: map[callKey]*serverCall{}},
		tracer:   o.Tracer,
		access:   o.Access,
		callers:  telemetry.Bounded{Max: maxCallers},
	}
	var err error
	if a.app, err = newApp(o.Config); err != nil {
		return nil, err
	}
	a.pool = newWorkers(o.Config.Concurrency, a.serve, a.refuse)
	a.streams.max = maxStreams
	a.guard = o.Security
	a.budget = stream.NewBudget(stream.DefaultBudget)
	a.eject.cfg = o.Config.Outlier
	a.policy = policy.Compile(o.Config.Allow)
	a.admit = []admission{a.authenticated, a.forThisService, addressed, a.originForm, fresh, a.authorize, a.duplicate}
	a.announce = discovery.NewAnnouncer(o.Broker, discovery.Self{
		Service:     o.Config.Service,
		Instance:    o.Config.Instance,
		Version:     o.Config.Version,
		Zone:        o.Config.Zone,
		Labels:      o.Config.Labels,
		Sidecar:     o.Sidecar,
		Concurrency: o.Config.Concurrency,
		Mesh:        o.Mesh,
	}, o.Announce, a.readings, a.logger).WithMetrics(o.Metrics)
	if o.Security != nil {
		a.announce.WithIdentity(o.Security.Source()) // announcements are signed
	}
	a.pool.measured = a.announce.Announce
	return a, nil
}

// newApp returns the client of the application at cfg.Target.
func newApp(cfg *config.Adapter) (app, error) {
	u, err := url.Parse(cfg.Target)
	if err != nil {
		return nil, fmt.Errorf("adapter target %q: %w", cfg.Target, err)
	}
	var tlsCfg *tls.Config // https:// and grpcs://
	if u.Scheme == "https" || u.Scheme == "grpcs" {
		if tlsCfg, err = cfg.TLS.ClientConfig(u.Hostname()); err != nil {
			return nil, fmt.Errorf("adapter target %q: %w", cfg.Target, err)
		}
	}
	if config.IsGRPCTarget(cfg.Target) {
		g, err := newGRPCApp(u.Host, tlsCfg, grpcwire.MaxMessage(int64(cfg.MaxBodyBytes)), cfg.Health)
		if err != nil {
			return nil, fmt.Errorf("adapter target %q: %w", cfg.Target, err)
		}
		return g, nil
	}
	return newHTTPApp(u.Scheme+"://"+u.Host+strings.TrimSuffix(u.Path, "/"), tlsCfg, cfg), nil
}

// readings are the load figures announced with the instance.
func (a *Adapter) readings() discovery.Load {
	return discovery.Load{Inflight: a.pool.busyNow(), P50: a.latency.TakeMedian(), ServiceTime: a.pool.cost.get()}
}

// reject counts and logs (rate-limited) an envelope taken off the bus and
// dropped.
func (a *Adapter) reject(reason string, size int, err error) {
	a.metrics.EnvelopesRejected.WithLabelValues("adapter", reason).Inc()
	if ok, suppressed := a.limiter.Allow(); ok {
		a.logger.Warn("envelope rejected", telemetry.KeyReason, reason, telemetry.KeyBytes, size,
			telemetry.KeyErr, err, "suppressed", suppressed)
	}
}

// lifecycle is the adapter's subscriptions and health loop, guarded by mu.
type lifecycle struct {
	mu         sync.Mutex
	subs       []broker.Subscription // inbox and cancel subjects
	queue      []broker.Subscription // the service's (and version's) queue groups, while healthy
	own        broker.Subscription   // the instance's subject (direct mode), from Start to Shutdown
	started    bool
	stopHealth context.CancelFunc
	healthDone chan struct{}
	stopProbes context.CancelFunc
	probesDone chan struct{}
}
