package ambassador

import (
	"container/list"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// DefaultMaxConnections is a listener's connection limit when the config
// sets none: 2,048, or a quarter of the process's file descriptors if that
// is less. Each idle HTTP connection costs the sidecar about 20 KB, so the
// limit also bounds what a flood of idle connections can take.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 {
		return int(min(2048, rl.Cur/4))
	}
	return 2048
}

// connLimiter bounds the connections of one listener. At the limit, a new
// connection takes the place of the one that has been idle longest — one
// that never sent a request, or waits between requests — so connections
// opened and left idle cannot lock out callers that have calls to make.
// With no idle connection to close, the new one is closed. Both are
// counted and logged.
type connLimiter struct {
	net.Listener
	max     int
	logger  *slog.Logger
	limiter telemetry.Limiter
	evicted prometheus.Counter
	refused prometheus.Counter

	// trackIdle: the server reports connection states (ConnState), so
	// idle connections can be told from busy ones. Without it (gRPC)
	// every connection counts as busy.
	trackIdle bool

	mu    sync.Mutex
	conns map[net.Conn]*list.Element // every open connection; nil while busy
	idle  list.List                  // of net.Conn, longest idle first
	open  int
}

func newConnLimiter(ln net.Listener, max int, trackIdle bool, logger *slog.Logger, m *telemetry.Metrics) *connLimiter {
	addr := ln.Addr().String()
	return &connLimiter{
		Listener: ln, max: max, trackIdle: trackIdle, logger: logger,
		evicted: m.ConnectionsClosed.WithLabelValues(addr, "evicted-idle"),
		refused: m.ConnectionsClosed.WithLabelValues(addr, "refused"),
		conns:   map[net.Conn]*list.Element{},
	}
}

// Accept accepts the next connection, making room for it at the limit.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		raw, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &limitedConn{Conn: raw, l: l}
		l.mu.Lock()
		var victim net.Conn
		if l.open >= l.max {
			if front := l.idle.Front(); front != nil {
				victim = front.Value.(net.Conn)
				l.forgetLocked(victim)
			}
		}
		admitted := l.open < l.max
		if admitted {
			l.open++
			l.conns[c] = nil
			if l.trackIdle {
				l.conns[c] = l.idle.PushBack(c) // idle until its first request
			}
		}
		l.mu.Unlock()
		if victim != nil {
			victim.Close()
			l.evicted.Inc()
			l.warn("connection limit reached: closed the longest idle connection")
		}
		if admitted {
			return c, nil
		}
		raw.Close()
		l.refused.Inc()
		l.warn("connection limit reached and every connection busy: new connection closed")
	}
}

func (l *connLimiter) warn(msg string) {
	if ok, suppressed := l.limiter.Allow(); ok {
		l.logger.Warn(msg, telemetry.KeyAddr, l.Addr().String(), "max_connections", l.max, "suppressed", suppressed)
	}
}

// ConnState follows a connection for an http.Server's ConnState hook.
func (l *connLimiter) ConnState(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, known := l.conns[c]
	if !known {
		return // closed to make room, or not this listener's
	}
	switch s {
	case http.StateActive:
		if e != nil {
			l.idle.Remove(e)
			l.conns[c] = nil
		}
	case http.StateIdle:
		if e == nil {
			l.conns[c] = l.idle.PushBack(c)
		}
	case http.StateClosed, http.StateHijacked:
		l.forgetLocked(c)
	}
}

func (l *connLimiter) forgetLocked(c net.Conn) {
	e, known := l.conns[c]
	if !known {
		return
	}
	if e != nil {
		l.idle.Remove(e)
	}
	delete(l.conns, c)
	l.open--
}

// limitedConn is a connection a connLimiter counts until it is closed.
type limitedConn struct {
	net.Conn
	l    *connLimiter
	once sync.Once
}

func (c *limitedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.forgetLocked(c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// CloseWrite half-closes the connection (TCP and Unix sockets can): an
// upgraded connection's application that has ended its side tells the
// caller so, as a WebSocket server does by closing first after the close
// handshake. Without it, the caller waited for an end that never came
// (Chromium gives up after 2 s). net/http uses it too: a connection it
// drops with a request body unread now sends its FIN before the server's
// wait for the caller to read the answer.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
