package adapter

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
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
// down, calls fail, and one wait per reconnectWait finds that out.
func TestGRPCAppReconnects(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	stop := serveHealth(t, lis)
	g, err := newGRPCApp(addr, 1<<20, &config.Health{GRPC: true})
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
	if g.re.failedAt.Load() == 0 {
		t.Error("no wait for a new attempt ended while the application was down")
	}
	// Right after a wait that found it down, a call does not wait again
	// (a wait would record its own end).
	g.re.failedAt.Store(time.Now().UnixNano())
	before := g.re.failedAt.Load()
	if g.re.ready(ctx) || g.re.failedAt.Load() != before {
		t.Error("a call right after a failed wait waited again")
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
