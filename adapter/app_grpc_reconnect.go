package adapter

import (
	"context"
	"sync/atomic"
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

// reconnectWait bounds how long a call that found the application's
// connection failed waits for the new attempt it asked for.
const reconnectWait = 100 * time.Millisecond

// reconnector lets a call that finds the connection to the application
// failed (grpc-go fails such calls at once until its next attempt) ask for
// an attempt now and wait for it, as a new HTTP connection would be dialled
// for it: the first call after the application is back is served, not
// failed. While the application stays down, one wait per reconnectWait is
// enough to know it: the calls meanwhile fail at once.
type reconnector struct {
	conn *grpc.ClientConn
	// failedAt is when a wait last ended without a connection (UnixNano).
	failedAt atomic.Int64
}

// ready reports whether the connection is up after a new attempt, made
// when the connection had failed. Callers ask it only after a call failed
// as unavailable, so a connection in any other state is left to grpc-go.
func (r *reconnector) ready(ctx context.Context) bool {
	if r.conn.GetState() != connectivity.TransientFailure {
		return false
	}
	if time.Now().UnixNano()-r.failedAt.Load() < int64(reconnectWait) {
		return false
	}
	r.conn.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(ctx, reconnectWait)
	defer cancel()
	// The channel stays in TRANSIENT_FAILURE while it tries again (pick
	// first's sticky failure), so the wait ends at READY or at the bound.
	for s := connectivity.TransientFailure; s != connectivity.Ready; s = r.conn.GetState() {
		if s == connectivity.Shutdown || !r.conn.WaitForStateChange(ctx, s) {
			r.failedAt.Store(time.Now().UnixNano())
			return false
		}
	}
	return true
}
