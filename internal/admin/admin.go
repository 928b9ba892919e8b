// Package admin serves a sidecar's admin port: the Admin API of
// proto/busmesh/v1/admin.proto over gRPC and as REST/JSON through
// grpc-gateway, Prometheus metrics on /metrics, liveness on /healthz,
// readiness on /readyz, the Go profiler on /debug/pprof/ and a dashboard
// on / (with the sidecar's identity on /info), all on one
// port (gRPC over unencrypted HTTP/2, the rest over HTTP/1 or 2). It reads
// what the sidecar exposes, and changes one thing: the ambassador's traffic
// rules (routing.go), through the ambassador. It does not run the data
// path. See docs/architecture.md.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/busmesh/busmesh/internal/discovery"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// Options describe the sidecar the admin port reports on.
type Options struct {
	Addr    string
	Sidecar string
	Broker  string // the broker URL, password hidden
	Metrics *telemetry.Metrics
	Logger  *slog.Logger // nil discards
	// Token guards the privileged endpoints (see guard.go); "" lets only
	// loopback peers use them.
	Token string
	// Version is the sidecar's busmesh version; Mesh its mesh; Caller the
	// identity its ambassador calls as. /info and the dashboard show them.
	Version string
	Mesh    string
	Caller  string
}

// Sidecar is what the admin API reads from the running sidecar. Set the
// parts that exist; nil ones answer empty.
type Sidecar struct {
	// Registry is the ambassador's view of the mesh.
	Registry *discovery.Registry
	// Routes lists the sidecar's routes.
	Routes []*busmeshv1.Route
	// Routing is the ambassador's routing table: ListRoutes shows it,
	// SetTraffic and ShiftTraffic change it.
	Routing Routing
	// Calls is the ambassador's shared-port handler: the Call method goes
	// through it, the Host header naming the service.
	Calls http.Handler
	// Components reports the health of each part ("ok" or why not).
	Components func() map[string]string
	// BrokerSince is when the broker connection opened.
	BrokerSince time.Time
	// BrokerConnected reports whether the connection is up now (nil: the
	// backend cannot tell, taken as up).
	BrokerConnected func() bool
	// Brokers reports the ambassador's further broker connections
	// (ambassador.brokers), sorted by name; nil: none.
	Brokers func() []BrokerInfo
}

// Server is the admin port.
type Server struct {
	opts    Options
	started time.Time
	ln      net.Listener
	http    *http.Server
	grpc    *grpc.Server
	ready   atomic.Bool
	wg      sync.WaitGroup

	mu      sync.RWMutex
	sidecar Sidecar
}

// Start listens on o.Addr and serves in the background. The server reports
// not ready until SetReady(true); the Admin API answers from what SetSidecar
// gave it.
func Start(o Options) (*Server, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin listen %s: %w", o.Addr, err)
	}
	s := &Server{opts: o, started: time.Now(), ln: ln}
	api := &api{s: s}
	s.grpc = grpc.NewServer()
	busmeshv1.RegisterAdminServer(s.grpc, api)
	// Unknown JSON keys are refused, as the config file's are: a typo in
	// a route change must not pass as "no such rule".
	gateway := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
		Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		},
	}))
	if err := busmeshv1.RegisterAdminHandlerServer(context.Background(), gateway, api); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin gateway: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{Registry: o.Metrics.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.Handle("/v1/", gateway)
	s.registerUI(mux)

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true) // gRPC without TLS, on the same port
	s.http = &http.Server{
		Handler: guard(o.Token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
				s.grpc.ServeHTTP(w, r)
				return
			}
			mux.ServeHTTP(w, r)
		})),
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
	}
	o.Logger.Info("admin listening", telemetry.KeyAddr, ln.Addr().String())
	s.wg.Go(func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.Logger.Error("admin server stopped", telemetry.KeyErr, err)
		}
	})
	return s, nil
}

// SetSidecar gives the admin API the running sidecar's parts.
func (s *Server) SetSidecar(sc Sidecar) {
	s.mu.Lock()
	s.sidecar = sc
	s.mu.Unlock()
}

func (s *Server) parts() Sidecar {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sidecar
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// SetReady sets what /readyz answers.
func (s *Server) SetReady(ready bool) { s.ready.Store(ready) }

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.grpc.Stop()
	s.wg.Wait()
	return err
}
