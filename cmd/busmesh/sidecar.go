package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/busmesh/busmesh/adapter"
	"github.com/busmesh/busmesh/ambassador"
	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/admin"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/residency"
	"github.com/busmesh/busmesh/internal/sysmon"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// drainTimeout bounds a shutdown: calls in flight get this long to finish.
const drainTimeout = 30 * time.Second

func newSidecarCmd() *cobra.Command {
	var (
		file, logLevel string
		check          bool
	)
	cmd := &cobra.Command{
		Use:   "sidecar --config FILE",
		Short: "Run the ambassador and/or adapter a config file describes",
		Long: `Run a sidecar. The config file's ambassador section opens local ports that
carry calls to services; its adapter section serves a local application to
the mesh. BUSMESH_* environment variables override single keys, for example
BUSMESH_BROKER=amqp://guest:guest@127.0.0.1:5672/ switches the broker.

SIGINT or SIGTERM drains: no new calls are taken, calls in flight get up to
30s to finish. When it serves, the sidecar logs one "ready" line with its
addresses, and its admin port's /readyz answers ready from that moment.

--check validates the config and that its ports are free, without starting
(exit status 0 valid, 2 config invalid, 1 a port in use); busmesh check
also tries the broker and the application.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("busmesh sidecar: --config FILE is required")}
			}
			if check {
				return checkOnly(cmd, file)
			}
			// First, before the config is read (it may be a pipe, which
			// the new run could not read again): this returns only when
			// the process was not replaced.
			reexecErr := sysmon.Reexec()
			cfg, err := config.Load(file)
			if err != nil {
				return usageError{err}
			}
			if logLevel != "" {
				cfg.Log.Level = logLevel
			}
			logger, err := telemetry.NewLogger(os.Stderr, cfg.Log.Level, cfg.Log.Format)
			if err != nil {
				return usageError{err}
			}
			if reexecErr != nil {
				logger.Warn("runtime setting not made", "godebug", sysmon.Setting, telemetry.KeyErr, reexecErr)
			}
			if _, set := os.LookupEnv("GOMAXPROCS"); !set && cfg.Procs > 0 {
				runtime.GOMAXPROCS(cfg.Procs)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sc, err := startSidecar(ctx, cfg, logger)
			if err != nil {
				return startError(cfg, err)
			}
			watched := make(chan struct{})
			go func() {
				defer close(watched)
				sc.watchConfig(ctx, file)
			}()
			<-ctx.Done()
			<-watched
			logger.Info("shutting down", telemetry.KeyReason, context.Cause(ctx))
			return sc.shutdown()
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "sidecar config file (YAML)")
	cmd.Flags().BoolVar(&check, "check", false, "validate the config and its ports, then exit without starting")
	cmd.Flags().StringVar(&logLevel, "log-level", "", "override log.level: debug, info, warn, error")
	return cmd
}

// sidecar is a running sidecar: broker connection, admin port, ambassador
// and adapter, as configured.
type sidecar struct {
	cfg        *config.Config
	logger     *slog.Logger
	broker     broker.Broker
	admin      *admin.Server
	ambassador *ambassador.Ambassador
	adapter    *adapter.Adapter
	watcher    *discovery.Watcher
	registry   *discovery.Registry
	security   *security // nil: security off
	tracer     *telemetry.Tracer
	// shadows are the ambassador.brokers connections, by name, and the
	// discovery watching each (direct mode and health over that broker).
	shadows        map[string]broker.Broker
	shadowWatchers []*discovery.Watcher
}

// discoverySettle is how long a starting ambassador waits for the answers
// to its discovery pings (one per service it routes to) before it reports
// ready.
const discoverySettle = 250 * time.Millisecond

// startSidecar starts what cfg describes. On error, what was started is
// stopped again.
func startSidecar(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*sidecar, error) {
	return startSidecarWith(ctx, cfg, logger, startHints{})
}

// startHints say how to fix a failed start in the words of the command
// that started it.
type startHints struct {
	// flags names the flag that sets a listener's key (dev mode).
	flags map[string]string
	// duplicateFix says how to rename a duplicate instance.
	duplicateFix string
}

// startSidecarWith is startSidecar with start hints.
func startSidecarWith(ctx context.Context, cfg *config.Config, logger *slog.Logger, hints startHints) (_ *sidecar, err error) {
	logger = logger.With(telemetry.KeySidecar, cfg.ID)
	if err := checkPorts(listeners(cfg), hints.flags); err != nil {
		return nil, err
	}
	sc := &sidecar{cfg: cfg, logger: logger}
	defer func() {
		if err != nil {
			_ = sc.shutdown() // the start's error is the one to report
		}
	}()
	system := telemetry.System(cfg.Broker)
	metrics := telemetry.NewMetrics(telemetry.WithBroker(system), telemetry.WithVersion(version))
	if cfg.Admin != "" {
		sc.admin, err = admin.Start(admin.Options{Addr: cfg.Admin, Sidecar: cfg.ID, Broker: broker.Redact(cfg.Broker),
			Metrics: metrics, Logger: logger, Token: cfg.AdminToken, Version: cliVersion(), Mesh: cfg.Mesh, Caller: callerName(cfg)})
		if err != nil {
			return nil, err
		}
	}
	openCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if sc.broker, err = broker.Open(openCtx, cfg.Broker, logger); err != nil {
		return nil, err
	}
	sc.broker = telemetry.MeterBroker(sc.broker, metrics)
	if sc.tracer, err = newTracer(ctx, cfg, system); err != nil {
		return nil, err
	}
	var access *telemetry.AccessLog
	if cfg.Log.Access.Enabled {
		access = telemetry.NewAccessLog(os.Stderr, cfg.Log.Access.Sample)
	}
	logger.Info("broker connected", telemetry.KeyBroker, broker.Redact(cfg.Broker))
	brokerSince := time.Now()
	if sc.security, err = startSecurity(cfg, sc.broker, logger); err != nil {
		return nil, err
	}
	if cfg.Adapter != nil {
		// busmesh dev refuses to join a broker where its instance is
		// served already; a sidecar starts, and discovery reports the
		// conflict on both sides without losing a call.
		if hints.duplicateFix != "" {
			if err = refuseDuplicate(ctx, sc.broker, cfg, hints.duplicateFix); err != nil {
				return nil, err
			}
		}
		sc.adapter, err = adapter.New(adapter.Options{Config: cfg.Adapter, Sidecar: cfg.ID, Mesh: cfg.Mesh, Broker: sc.broker,
			Logger: logger, Metrics: metrics, Announce: cfg.Discovery.Interval.D(), Security: sc.security.Guard(),
			Tracer: sc.tracer, Access: access})
		if err != nil {
			return nil, err
		}
		if g := sc.security.Guard(); g != nil {
			if err = g.ServeCerts(ctx, cfg.Adapter.Service); err != nil {
				return nil, err
			}
		}
		// Subscriptions live until shutdown drains them, not until the
		// signal: cut at the signal, they would drop what is in flight.
		if err = sc.adapter.Start(context.WithoutCancel(ctx)); err != nil {
			return nil, err
		}
	}
	if cfg.Ambassador != nil {
		if g := sc.security.Guard(); g != nil {
			if err = g.StartAmbassador(ctx); err != nil {
				return nil, err
			}
		}
		if sc.shadows, err = openShadows(ctx, cfg.Ambassador.Brokers, logger, metrics); err != nil {
			return nil, err
		}
		if g := sc.security.Guard(); g != nil {
			for _, name := range slices.Sorted(maps.Keys(sc.shadows)) {
				if err = g.AddBroker(ctx, sc.shadows[name]); err != nil {
					return nil, fmt.Errorf("ambassador.brokers.%s: %w", name, err)
				}
			}
		}
		sc.registry = discovery.NewRegistryWith(discovery.Options{Interval: cfg.Discovery.Interval.D(), Metrics: metrics, Logger: logger})
		registries := map[string]*discovery.Registry{}
		for name := range sc.shadows {
			registries[name] = discovery.NewRegistryWith(discovery.Options{Interval: cfg.Discovery.Interval.D(), Metrics: metrics,
				Logger: logger.With("mirror_broker", name)})
		}
		// The ambassador names the services it routes to (Registry.Route);
		// the watcher then asks only those, and those calls ask for.
		sc.ambassador, err = ambassador.New(context.WithoutCancel(ctx), ambassador.Options{Config: cfg.Ambassador, Sidecar: cfg.ID, Mesh: cfg.Mesh, Broker: sc.broker,
			Logger: logger, Metrics: metrics, Registry: sc.registry, Security: sc.security.Guard(),
			Tracer: sc.tracer, Access: access, Brokers: sc.shadows, Registries: registries})
		if err != nil {
			return nil, err
		}
		for _, name := range slices.Sorted(maps.Keys(sc.shadows)) {
			w, err := discovery.WatchWith(ctx, sc.shadows[name], registries[name],
				discovery.WatchOptions{Mesh: cfg.Mesh, Sidecar: cfg.ID, Logger: logger.With("mirror_broker", name), Settle: discoverySettle,
					Identity: sc.security.Source()})
			if err != nil {
				return nil, fmt.Errorf("ambassador.brokers.%s: discovery: %w", name, err)
			}
			sc.shadowWatchers = append(sc.shadowWatchers, w)
		}
		sc.watcher, err = discovery.WatchWith(ctx, sc.broker, sc.registry,
			discovery.WatchOptions{Mesh: cfg.Mesh, Sidecar: cfg.ID, Logger: logger, Settle: discoverySettle,
				Identity: sc.security.Source()})
		if err != nil {
			return nil, err
		}
		if err = sc.ambassador.Start(); err != nil {
			return nil, err
		}
	}
	if sc.adapter != nil {
		if err = sc.watchPeers(ctx, logger, metrics); err != nil {
			return nil, err
		}
	}
	if sc.admin != nil {
		parts := admin.Sidecar{Routes: sc.routes(), Components: sc.components, BrokerSince: brokerSince,
			BrokerConnected: func() bool { return broker.Connected(sc.broker) }}
		if len(sc.shadows) > 0 {
			parts.Brokers = sc.shadowStates
		}
		if sc.ambassador != nil {
			parts.Registry = sc.registry
			parts.Calls = sc.ambassador.Handler("")
			parts.Routing = sc.ambassador
		}
		sc.admin.SetSidecar(parts)
	}
	// One line with the addresses, then /readyz: whoever sees ready can
	// read where the sidecar serves.
	logger.Info("ready", sc.readyAttrs()...)
	if sc.admin != nil {
		sc.admin.SetReady(true)
	}
	// The start touched pages of the binary the steady state never uses
	// again (internal/residency): off the way of the first calls.
	go releaseStartPages(logger)
	return sc, nil
}

// releaseStartPages drops the binary's pages the start touched from the
// resident set, and logs what that did.
func releaseStartPages(logger *slog.Logger) {
	r, err := residency.ReleaseStartPages()
	if err != nil {
		logger.Warn("start-up pages kept", "error", err)
		return
	}
	logger.Debug("start-up pages released", "mapped_bytes", r.Bytes, "rss_before_bytes", r.RSSBefore, "rss_after_bytes", r.RSSAfter)
}

// watchPeers has discovery follow the adapter's own service, so the
// adapter knows whether another instance can take its calls before it
// steps aside (self-ejection). A sidecar without an ambassador gets a
// registry and a watcher of its own for that one service.
func (sc *sidecar) watchPeers(ctx context.Context, logger *slog.Logger, metrics *telemetry.Metrics) error {
	cfg := sc.cfg
	if sc.registry == nil {
		sc.registry = discovery.NewRegistryWith(discovery.Options{Interval: cfg.Discovery.Interval.D(), Metrics: metrics, Logger: logger})
		w, err := discovery.WatchWith(ctx, sc.broker, sc.registry,
			discovery.WatchOptions{Mesh: cfg.Mesh, Sidecar: cfg.ID, Logger: logger, Settle: discoverySettle,
				Identity: sc.security.Source()})
		if err != nil {
			return err
		}
		sc.watcher = w
	}
	// Not waited for: until the peers are heard, the adapter stays.
	sc.registry.Learn(ctx, cfg.Adapter.Service, 0)
	sc.adapter.SetPeers(sc.registry)
	return nil
}

// newTracer returns the sidecar's tracer, nil when tracing is off. Its
// spans name the sidecar's service: the adapter's, else the ambassador's.
func newTracer(ctx context.Context, cfg *config.Config, system string) (*telemetry.Tracer, error) {
	o := telemetry.TracingOptions{Endpoint: cfg.Tracing.Endpoint, Protocol: cfg.Tracing.Protocol,
		Sampler: cfg.Tracing.Sampler, Ratio: cfg.Tracing.Ratio, Instance: cfg.ID, System: system}
	switch {
	case cfg.Adapter != nil:
		o.Service = cfg.Adapter.Service
	case cfg.Ambassador != nil:
		o.Service = cfg.Ambassador.Service
	}
	return telemetry.NewTracer(ctx, o)
}

// routes lists the sidecar's ways in, for the admin API.
func (sc *sidecar) routes() []*busmeshv1.Route {
	var routes []*busmeshv1.Route
	if a := sc.cfg.Ambassador; a != nil {
		addrs := sc.ambassador.Addrs()
		if a.HTTP != "" {
			routes = append(routes, &busmeshv1.Route{Kind: "http-shared", Listen: addrs[0], Service: "*"})
			addrs = addrs[1:]
		}
		for i, svc := range slices.Sorted(maps.Keys(a.Upstreams)) {
			routes = append(routes, &busmeshv1.Route{Kind: "http-upstream", Listen: addrs[i], Service: svc})
		}
		if g := sc.ambassador.GRPCAddr(); g != "" {
			routes = append(routes, &busmeshv1.Route{Kind: "grpc", Listen: g, Service: "*"})
			for _, prefix := range slices.Sorted(maps.Keys(a.GRPCRoutes)) {
				routes = append(routes, &busmeshv1.Route{Kind: "grpc-prefix", Listen: g, Match: prefix, Service: a.GRPCRoutes[prefix]})
			}
		}
	}
	if a := sc.cfg.Adapter; a != nil {
		routes = append(routes, &busmeshv1.Route{Kind: "adapter", Service: a.Service, Target: a.Target})
	}
	return routes
}

// components reports the health of each part, for the admin API.
func (sc *sidecar) components() map[string]string {
	c := map[string]string{"security": sc.security.state()}
	if sc.ambassador != nil {
		c["ambassador"] = "ok"
	}
	if sc.adapter != nil {
		c["adapter"] = "ok"
	}
	return c
}

// shutdown drains the ambassador and adapter, then closes the broker and
// the admin port.
func (sc *sidecar) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if sc.admin != nil {
		sc.admin.SetReady(false)
	}
	var errs []error
	if sc.ambassador != nil {
		errs = append(errs, sc.ambassador.Shutdown(ctx))
	}
	if sc.adapter != nil {
		errs = append(errs, sc.adapter.Shutdown(ctx))
	}
	if sc.watcher != nil {
		errs = append(errs, sc.watcher.Close())
	}
	for _, w := range sc.shadowWatchers {
		errs = append(errs, w.Close())
	}
	errs = append(errs, sc.security.close())
	if sc.broker != nil {
		errs = append(errs, sc.broker.Close())
	}
	for _, b := range sc.shadows {
		errs = append(errs, b.Close())
	}
	errs = append(errs, sc.tracer.Shutdown(ctx))
	if sc.admin != nil {
		errs = append(errs, sc.admin.Shutdown(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	sc.logger.Info("stopped")
	return nil
}
