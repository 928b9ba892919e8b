package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// security is a sidecar's identity, followed through rotations, and the
// guard that seals and opens its envelopes; nil when it runs without.
type security struct {
	src   *identity.Source
	guard *secure.Guard
	stop  context.CancelFunc
	done  chan struct{}
}

// startSecurity loads cfg's identity and starts following its files. A
// sidecar without identity logs one warning, unless cfg says insecure.
func startSecurity(cfg *config.Config, b broker.Broker, logger *slog.Logger) (*security, error) {
	if cfg.Identity == nil {
		if !cfg.Insecure {
			logger.Warn("security off: no identity section, so envelopes are not authenticated and any broker client can call this sidecar's service; " +
				"add identity: {cert, key, ca} (busmesh ca issue SERVICE), or insecure: true to silence this")
		}
		return nil, nil
	}
	id := cfg.Identity
	src, err := identity.NewSource(identity.SourceConfig{CertFile: id.Cert, KeyFile: id.Key, CAFile: id.CA, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &security{src: src, stop: stop, done: make(chan struct{})}
	s.guard = secure.New(secure.Options{Source: src, Broker: b, Mesh: cfg.Mesh, Sidecar: cfg.ID, Logger: logger,
		SealFor: func(service string) bool {
			a := cfg.Ambassador
			return a != nil && a.Services[service] != nil && a.Services[service].Seal
		}})
	go func() {
		defer close(s.done)
		src.Run(ctx)
	}()
	cur := src.Current()
	if a := cfg.Ambassador; a != nil && a.Service == "" {
		a.Service = cur.Service() // calls go out as the certificate's service
	}
	logger.Info("security on", telemetry.KeyService, cur.Service(), "key_id", cur.KeyID().String(),
		"not_after", cur.Cert().NotAfter)
	return s, nil
}

// Guard is the sidecar's guard, nil when security is off.
func (s *security) Guard() *secure.Guard {
	if s == nil {
		return nil
	}
	return s.guard
}

// Source is the sidecar's identity, nil when security is off.
func (s *security) Source() *identity.Source {
	if s == nil {
		return nil
	}
	return s.src
}

// state is "on" or "off", for the admin API.
func (s *security) state() string {
	if s == nil {
		return "off"
	}
	return "on"
}

// close stops following the identity files and ends the guard's
// subscriptions.
func (s *security) close() error {
	if s == nil {
		return nil
	}
	s.stop()
	<-s.done
	return s.guard.Close()
}

// adminToken sends BUSMESH_ADMIN_TOKEN, when set, with every Admin API
// call, as the sidecar's admin port asks for its privileged methods.
func adminToken() grpc.DialOption {
	token := os.Getenv("BUSMESH_ADMIN_TOKEN")
	return grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// devIdentity makes a mesh CA and an identity for service in a new
// temporary directory, for `busmesh dev`: the dev mesh runs with security
// on, as production should. remove deletes the directory.
func devIdentity(mesh, service string) (_ *config.Identity, remove func(), err error) {
	dir, err := os.MkdirTemp("", "busmesh-dev-ca-")
	if err != nil {
		return nil, nil, fmt.Errorf("dev identity: %w", err)
	}
	remove = func() { _ = os.RemoveAll(dir) } // a temporary directory: nothing to do if it stays
	defer func() {
		if err != nil {
			remove()
		}
	}()
	now := time.Now()
	ca, err := identity.NewCA(mesh, 7*24*time.Hour, now)
	if err != nil {
		return nil, nil, fmt.Errorf("dev identity: %w", err)
	}
	if err := ca.WriteFiles(dir); err != nil {
		return nil, nil, fmt.Errorf("dev identity: %w", err)
	}
	certPEM, keyPEM, err := ca.Issue(service, 24*time.Hour, now)
	if err != nil {
		return nil, nil, fmt.Errorf("dev identity: %w", err)
	}
	certFile, keyFile, err := identity.WriteServiceFiles(dir, service, certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("dev identity: %w", err)
	}
	return &config.Identity{Cert: certFile, Key: keyFile, CA: filepath.Join(dir, identity.CACertFile)}, remove, nil
}

// securityState is what the sidecar's admin API says of its security:
// "on", "off", or "" when it does not say (an older sidecar).
func securityState(ctx context.Context, c busmeshv1.AdminClient) string {
	h, err := c.GetHealth(ctx, &busmeshv1.GetHealthRequest{})
	if err != nil {
		return ""
	}
	return h.Components["security"]
}

// printSecurity adds "security: off" under a listing when the sidecar
// runs without an identity.
func printSecurity(out io.Writer, state string) error {
	if state != "off" {
		return nil
	}
	_, err := fmt.Fprintln(out, "\nsecurity: off (no identity: envelopes are not authenticated; see docs/security.md)")
	return err
}
