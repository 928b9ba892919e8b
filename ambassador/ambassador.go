package ambassador

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Options configure an Ambassador.
type Options struct {
	Config  *config.Ambassador
	Sidecar string // this sidecar's ID: its inbox is busmesh.<mesh>.inbox.<Sidecar>
	Mesh    string // the mesh's name; "" is broker.DefaultMesh
	Broker  broker.Broker
	Logger  *slog.Logger // nil discards
	Metrics *telemetry.Metrics
	// Registry is the mesh as discovery sees it: a call to a service with
	// no healthy instance is answered at once, without publishing.
	Registry *discovery.Registry
	// Security seals what the ambassador sends and authenticates what it
	// takes; nil runs without (see package secure).
	Security *secure.Guard
	// Tracer, when set, makes a client span of every call and carries its
	// trace context to the adapter; nil leaves tracing off.
	Tracer *telemetry.Tracer
	// Access, when set, writes one access log line per call (sampled).
	Access *telemetry.AccessLog
	// Brokers are the connections of ambassador.brokers, by name: a
	// mirror with a broker copies calls there, a service's brokers
	// weights send calls there. The caller closes them, after Shutdown.
	Brokers map[string]broker.Broker
	// Registries are the mesh as discovery sees it over each of Brokers,
	// by the same names: what direct mode picks from and the
	// no-healthy-instances check asks on that broker. A broker without
	// one gets its calls in queue mode, unchecked.
	Registries map[string]*discovery.Registry
}

// Ambassador takes HTTP and gRPC calls from local applications and carries
// them over the broker to the services' adapters.
type Ambassador struct {
	cfg      *config.Ambassador
	sidecar  string
	subjects broker.Subjects
	pub      *bus.Publisher
	logger   *slog.Logger
	metrics  *telemetry.Metrics
	reg      *discovery.Registry
	inbox    *Inbox
	// mirrorInbox takes the answers to mirrored calls, to count and drop.
	mirrorInbox string
	mirrorSub   broker.Subscription
	// shadows are the other brokers mirrors copy to, by name; mirrors
	// publish the copies, by broker name ("" the sidecar's own).
	shadows map[string]*shadow
	mirrors map[string]*mirrorSender
	// primary is the lane of the sidecar's own broker; lanes every lane,
	// by brokers weights name (primary, or an ambassador.brokers name).
	primary *lane
	lanes   map[string]*lane
	chunk   int // body frame size
	lb      *balancer
	// services holds each service's retry budget, breaker and limits
	// (serviceOf), by service name. The breaker's state outlives reloads;
	// limits and budget are rebuilt when a reload changes them.
	services sync.Map
	// table is the routing in force; Reload swaps it.
	table    atomic.Pointer[table]
	tableGen atomic.Uint64
	// ctl serializes changes of the table: file reloads and admin
	// changes. file is the config file's section in force, overrides the
	// traffic rules admin changes set over it.
	ctl       sync.Mutex
	file      *config.Ambassador
	overrides map[string]override
	// invoke is the call pipeline: the middleware around roundTrip.
	invoke Invoker
	tracer *telemetry.Tracer
	access *telemetry.AccessLog
	labels *labels

	// httpGRPC serves the gRPC calls that come to HTTP ports
	// (grpc_http.go), made on the first; httpGRPCMade says it was.
	httpGRPC     func() *grpc.Server
	httpGRPCMade atomic.Bool

	mu         sync.Mutex
	grpcServer *grpc.Server
	grpcAddr   string
	servers    []*http.Server
	listeners  []net.Listener
	wg         sync.WaitGroup
}

// New subscribes the ambassador's inbox. Call Start to open its ports.
func New(ctx context.Context, o Options) (*Ambassador, error) {
	o.Logger = telemetry.OrDiscard(o.Logger)
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	logger := o.Logger.With(telemetry.KeyComponent, "ambassador")
	subjects := broker.NewSubjects(o.Mesh)
	a := &Ambassador{
		cfg:      o.Config,
		sidecar:  o.Sidecar,
		subjects: subjects,
		pub:      bus.NewPublisher(o.Broker),
		logger:   logger,
		metrics:  o.Metrics,
		reg:      o.Registry,
		lb:       newBalancer(subjects, logger, o.Metrics.Resilience),
		tracer:   o.Tracer,
		access:   o.Access,
		labels:   newLabels(o.Config.Service),
	}
	if o.Security != nil {
		a.pub.SetSealer(o.Security)
	}
	a.httpGRPC = sync.OnceValue(func() *grpc.Server {
		a.httpGRPCMade.Store(true)
		return a.newGRPCServer()
	})
	a.shadows = newShadows(o)
	a.mirrors = map[string]*mirrorSender{"": newMirrorSender(a.pub, primaryLane, o.Metrics, logger)}
	a.primary = newLane(primaryLane, a.pub, a.reg, a.lb)
	a.lanes = map[string]*lane{primaryLane: a.primary}
	maxMsg := a.pub.MaxMessage()
	for name, s := range a.shadows {
		a.mirrors[name] = s.out
		a.lanes[name] = s.lane
		maxMsg = min(maxMsg, s.lane.pub.MaxMessage())
	}
	// Bodies are framed before the call's broker is chosen: frames fit
	// the smallest broker's messages.
	a.chunk = stream.ChunkSize(maxMsg)
	if err := a.Reload(o.Config); err != nil {
		return nil, err
	}
	var mw []Middleware
	if a.tracer != nil { // off, the pipeline is as if tracing did not exist
		mw = append(mw, a.traced)
	}
	a.invoke = chain(a.roundTrip, append(mw, a.chooseBroker, a.requireBroker, a.routeTraffic, a.requireHealthy, a.withinCapacity, a.breaking, a.retrying)...)
	in, err := newInbox(ctx, a.pub, subjects.Inbox(o.Sidecar), o.Sidecar, logger, o.Metrics, o.Security)
	if err != nil {
		return nil, fmt.Errorf("ambassador inbox: %w", err)
	}
	a.inbox = in
	a.mirrorInbox = subjects.Inbox(o.Sidecar) + ".mirror"
	mirrors, err := o.Broker.Subscribe(ctx, a.mirrorInbox, a.mirrorAnswers(a.mirrors[""]))
	if err != nil {
		_ = in.close() // the subscribe error is the one to report
		return nil, fmt.Errorf("ambassador mirror inbox: %w", err)
	}
	a.mirrorSub = mirrors
	if err := a.openShadows(ctx, o); err != nil {
		_ = in.close() // the shadow's error is the one to report
		_ = mirrors.Unsubscribe()
		return nil, err
	}
	for _, m := range a.mirrors {
		m.start()
	}
	return a, nil
}

// Reload compiles cfg's routes and policies into a new routing table and
// swaps it in whole: calls in flight keep the table they started with, new
// calls take the new one. Ports are not reopened. On error the table in
// force stays. cfg is the config file's: traffic rules an admin change set
// stay over it while cfg leaves that service's rules as they were (see
// overrides.go).
func (a *Ambassador) Reload(cfg *config.Ambassador) error {
	a.ctl.Lock()
	defer a.ctl.Unlock()
	kept, dropped := a.rebase(cfg)
	eff := a.effective(cfg, kept)
	if err := a.swap(eff); err != nil {
		return err
	}
	a.file, a.overrides = cfg, kept
	for _, svc := range dropped {
		a.logger.Warn("admin traffic change replaced by the config file", telemetry.KeyService, svc, "routes_version", a.RoutesVersion())
	}
	for _, svc := range slices.Sorted(maps.Keys(kept)) {
		a.logger.Info("admin traffic change kept over the config file", telemetry.KeyService, svc, "routes_version", a.RoutesVersion())
	}
	return nil
}

// swap compiles cfg into the next table and puts it in force.
func (a *Ambassador) swap(cfg *config.Ambassador) error {
	t, err := compile(cfg, a.subjects, a.mirrors, a.lanes, a.tableGen.Add(1))
	if err != nil {
		return fmt.Errorf("ambassador routes: %w", err)
	}
	a.table.Store(t)
	for _, l := range a.lanes {
		if l.reg != nil {
			l.reg.Route(t.serviceNames()) // discovery follows the routes
		}
	}
	return nil
}

// RoutesVersion is the version of the routing table in force: 1 at start,
// one more at every Reload.
func (a *Ambassador) RoutesVersion() uint64 { return a.table.Load().version }

// Start opens the shared port and the per-service ports and serves them in
// the background. If one cannot be opened, none stays open.
func (a *Ambassador) Start() error {
	type port struct {
		addr    string
		service string // "" routes by Host
	}
	var ports []port
	if a.cfg.HTTP != "" {
		ports = append(ports, port{a.cfg.HTTP, ""})
	}
	services := make([]string, 0, len(a.cfg.Upstreams))
	for s := range a.cfg.Upstreams {
		services = append(services, s)
	}
	slices.Sort(services)
	for _, s := range services {
		ports = append(ports, port{a.cfg.Upstreams[s], s})
	}
	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	for _, p := range ports {
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("ambassador listen %s: %w", p.addr, err)
		}
		lns = append(lns, ln)
	}
	var grpcLn net.Listener
	if a.cfg.GRPC != "" {
		var err error
		if grpcLn, err = net.Listen("tcp", a.cfg.GRPC); err != nil {
			closeAll()
			return fmt.Errorf("ambassador listen %s: %w", a.cfg.GRPC, err)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	maxConns := a.cfg.MaxConnections
	if maxConns == 0 {
		maxConns = DefaultMaxConnections()
	}
	if grpcLn != nil {
		a.grpcAddr = grpcLn.Addr().String()
		a.startGRPC(newConnLimiter(grpcLn, maxConns, false, a.logger, a.metrics))
	}
	// HTTP/1.1 and HTTP/2 without TLS (h2c, prior knowledge): a local
	// port, as gRPC's is.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	for i, raw := range lns {
		ln := newConnLimiter(raw, maxConns, true, a.logger, a.metrics)
		srv := &http.Server{
			Protocols:         &protocols,
			HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: http2Streams},
			Handler:           a.Handler(ports[i].service),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ConnState:         ln.ConnState,
			ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelDebug),
		}
		a.servers = append(a.servers, srv)
		a.listeners = append(a.listeners, ln)
		a.logger.Info("listening", telemetry.KeyAddr, ln.Addr().String(), telemetry.KeyService, ports[i].service)
		a.wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("http server stopped", telemetry.KeyAddr, ln.Addr().String(), telemetry.KeyErr, err)
			}
		})
	}
	return nil
}

// http2Streams is how many calls an HTTP/2 connection to an HTTP port may
// have open at once. A gRPC client makes all its calls, watches and
// subscriptions included, on one connection; past the limit (net/http's
// default is 250) they would wait, where the gRPC port takes any number.
const http2Streams = 4096

// Addrs returns the addresses the ambassador listens on, the shared port
// first, then the per-service ports by service name.
func (a *Ambassador) Addrs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	addrs := make([]string, len(a.listeners))
	for i, l := range a.listeners {
		addrs[i] = l.Addr().String()
	}
	return addrs
}

// GRPCAddr returns the address of the gRPC port, "" when there is none.
func (a *Ambassador) GRPCAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.grpcAddr
}

// Shutdown stops accepting calls, waits for those in flight (until ctx
// ends), then closes the inbox.
func (a *Ambassador) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	servers, gs := a.servers, a.grpcServer
	a.mu.Unlock()
	var errs []error
	if gs != nil {
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
			gs.Stop()
			<-stopped
		}
	}
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			s.Close()
		}
	}
	if a.httpGRPCMade.Load() {
		// Its calls ended with the HTTP servers' (never GracefulStop: it
		// would end those in flight, as Stop does).
		a.httpGRPC().Stop()
	}
	a.wg.Wait()
	for _, m := range a.mirrors { // no call left to queue copies
		m.close()
	}
	if err := a.inbox.close(); err != nil {
		errs = append(errs, err)
	}
	if err := a.mirrorSub.Unsubscribe(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, a.closeShadows())
	return errors.Join(errs...)
}
