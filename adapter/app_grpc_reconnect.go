package adapter

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
)

// appBackoff paces grpc-go's attempts to reconnect to a gRPC application
// that refused a connection. grpc-go's default waits up to two minutes
// between attempts, and fails every call at once meanwhile: an application
// restarted after a minute's outage stayed unreachable through the mesh
// for as long again. The application is local, and a refused connection
// on loopback costs microseconds.
var appBackoff = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  100 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   time.Second,
	},
	MinConnectTimeout: 20 * time.Second,
})

// reconnectWait bounds how long calls that found the application's
// connection failed wait for the new attempt they asked for.
const reconnectWait = 100 * time.Millisecond

// reconnector lets a call that finds the connection to the application
// failed (grpc-go fails such calls at once until its next attempt) ask for
// an attempt now and wait for it, as a new HTTP connection would be dialled
// for it: the first call after the application is back is served, not
// failed. Calls that find an attempt under way wait for the same one; once
// one has found the application still down, the calls of the next
// reconnectWait fail at once, without asking again.
type reconnector struct {
	conn *grpc.ClientConn

	mu      sync.Mutex
	attempt *reconnectAttempt // under way, or nil
	// failedAt is when the last attempt ended without a connection.
	failedAt time.Time
}

// reconnectAttempt is one attempt the waiting calls share: done is closed
// once it has ended, ok then says whether the connection is up.
type reconnectAttempt struct {
	done chan struct{}
	ok   bool
}

// ready reports whether the connection is up after a new attempt, made
// when the connection had failed. Callers ask it only after a call failed
// as unavailable, so a connection in any other state is left to grpc-go.
func (r *reconnector) ready(ctx context.Context) bool {
	if r.conn.GetState() != connectivity.TransientFailure {
		return false
	}
	r.mu.Lock()
	at := r.attempt
	if at == nil {
		if !r.failedAt.IsZero() && time.Since(r.failedAt) < reconnectWait {
			r.mu.Unlock()
			return false
		}
		at = &reconnectAttempt{done: make(chan struct{})}
		r.attempt = at
		// On its own goroutine: a caller that gives up does not end the
		// attempt the others wait for.
		go r.try(at)
	}
	r.mu.Unlock()
	select {
	case <-at.done:
		return at.ok
	case <-ctx.Done():
		return false
	}
}

// try asks grpc-go for a new attempt now and waits up to reconnectWait for
// the connection.
func (r *reconnector) try(at *reconnectAttempt) {
	ctx, cancel := context.WithTimeout(context.Background(), reconnectWait)
	defer cancel()
	r.conn.ResetConnectBackoff()
	// The channel stays in TRANSIENT_FAILURE while it tries again (pick
	// first's sticky failure), so the wait ends at READY or at the bound.
	s := r.conn.GetState()
	for s != connectivity.Ready && s != connectivity.Shutdown {
		if s == connectivity.Idle {
			r.conn.Connect() // a connection made and lost before READY
		}
		if !r.conn.WaitForStateChange(ctx, s) {
			break
		}
		s = r.conn.GetState()
	}
	r.mu.Lock()
	at.ok = s == connectivity.Ready
	if !at.ok {
		r.failedAt = time.Now()
	}
	r.attempt = nil
	r.mu.Unlock()
	close(at.done)
}
