package adapter

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/busmesh/busmesh/internal/config"
)

// serveHealth serves the standard health service on lis until the test
// ends or the returned stop is called.
func serveHealth(t *testing.T, lis net.Listener) (stop func()) {
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return srv.Stop
}

// TestGRPCAppReconnects: once a gRPC application has been down long enough
// for grpc-go to back off its reconnects, the first call after it is back
// is served, not failed with the last connection error; while it stays
// down, calls fail, calls that come together share one attempt, and after
// an attempt that found it down the calls of the next reconnectWait fail
// without asking again.
func TestGRPCAppReconnects(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	stop := serveHealth(t, lis)
	g, err := newGRPCApp(addr, nil, 1<<20, &config.Health{GRPC: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.check(ctx); err != nil {
		t.Fatalf("while the application is up: %v", err)
	}

	stop()
	// Down for 1.5 s: grpc-go's attempts back off (here up to a second
	// apart) and every call in between fails.
	for down := time.Now(); time.Since(down) < 1500*time.Millisecond; time.Sleep(100 * time.Millisecond) {
		if err := g.check(ctx); err == nil {
			t.Fatal("a check passed while the application was down")
		}
	}
	if s := g.conn.GetState(); s != connectivity.TransientFailure {
		t.Fatalf("the connection to the stopped application is %v, want TRANSIENT_FAILURE", s)
	}
	g.re.mu.Lock()
	failed := g.re.failedAt
	g.re.mu.Unlock()
	if failed.IsZero() {
		t.Error("no attempt ended while the application was down")
	}

	// Calls that come together share one attempt: 20 of them take about
	// one reconnectWait, not 20.
	g.re.mu.Lock()
	g.re.failedAt = time.Time{}
	g.re.mu.Unlock()
	start := time.Now()
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if g.re.ready(ctx) {
				t.Error("ready while the application is down")
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > 10*reconnectWait {
		t.Errorf("20 calls at once waited %v for the application, want about %v: one attempt each?", took, reconnectWait)
	}

	// Right after an attempt that found it down, a call does not ask again.
	g.re.mu.Lock()
	g.re.failedAt = time.Now()
	failed = g.re.failedAt
	g.re.mu.Unlock()
	if g.re.ready(ctx) {
		t.Error("ready while the application is down")
	}
	g.re.mu.Lock()
	again := g.re.attempt != nil || !g.re.failedAt.Equal(failed)
	g.re.mu.Unlock()
	if again {
		t.Error("a call right after a failed attempt asked for another")
	}

	// Back on the same address: the first call is served.
	time.Sleep(2 * reconnectWait)
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveHealth(t, lis)
	if err := g.check(ctx); err != nil {
		t.Errorf("the first call after the application came back: %v; want it served", err)
	}
}
