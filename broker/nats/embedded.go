//go:build !nodev

package nats

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/busmesh/busmesh/broker"
)

// HasEmbedded tells whether this build has the embedded NATS server (all
// but -tags nodev builds).
const HasEmbedded = true

// EmbeddedMaxPayload is the embedded server's message size limit. It is
// larger than NATS's 1 MiB default so that typical bodies travel in one
// message.
const EmbeddedMaxPayload = 8 << 20

// Server is an in-process NATS server.
type Server struct {
	s *server.Server
}

// StartServer starts a NATS server on addr ("" or "127.0.0.1:0" for a free
// loopback port) and waits until it accepts connections.
func StartServer(addr string) (*Server, error) {
	host, port := "127.0.0.1", -1
	if addr != "" {
		h, p, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("embedded broker address %q: %w", addr, err)
		}
		if h != "" {
			host = h
		}
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("embedded broker port %q: %w", p, err)
		}
		if port == 0 {
			port = -1
		}
	}
	s, err := server.NewServer(&server.Options{
		Host:       host,
		Port:       port,
		MaxPayload: EmbeddedMaxPayload,
		NoLog:      true,
		NoSigs:     true,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded broker on %s:%d did not start within 5s", host, port)
	}
	return &Server{s: s}, nil
}

// URL returns the nats:// URL other processes use to connect.
func (s *Server) URL() string { return s.s.ClientURL() }

// Shutdown stops the server and waits for it to exit.
func (s *Server) Shutdown() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
}

// Connect returns a Conn to the server over an in-process pipe (no TCP).
func (s *Server) Connect(ctx context.Context, logger *slog.Logger) (*Conn, error) {
	return Dial(ctx, s.URL(), logger, nats.InProcessServer(s.s))
}

func openEmbedded(ctx context.Context, u *url.URL, logger *slog.Logger) (broker.Broker, error) {
	s, err := StartServer(u.Host)
	if err != nil {
		return nil, err
	}
	c, err := s.Connect(ctx, logger)
	if err != nil {
		s.Shutdown()
		return nil, err
	}
	c.onClose = s.Shutdown
	c.embedded = s.URL()
	logger.Info("embedded broker started", "url", s.URL())
	return c, nil
}

// EmbeddedURL returns the nats:// URL of the embedded server c started, or
// "" when c is a connection to an external server.
func (c *Conn) EmbeddedURL() string { return c.embedded }
