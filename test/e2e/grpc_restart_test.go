package e2e

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/test/testpb"
)

// grpcHealthCalleeConfig is an adapter in front of a gRPC application it
// checks with the standard health service.
const grpcHealthCalleeConfig = grpcCalleeConfig + `  health:
    grpc: true
    interval: 200ms
`

// serveEchoWithHealth serves testpb's Echo and the standard health service
// on addr ("127.0.0.1:0" for any free port) until stop is called.
func serveEchoWithHealth(t *testing.T, addr string) (bound string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterEchoServer(srv, testpb.Server{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}

// TestGRPCAppRestart: an adapter checking its gRPC application's health
// (grpc.health.v1) takes calls while the application is up, answers them
// unavailable while it is down, and serves them again soon after it is back
// on the same address, however long it was away: grpc-go's own reconnect
// backoff grows to two minutes, during which it fails every call at once.
func TestGRPCAppRestart(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			app, stop := serveEchoWithHealth(t, "127.0.0.1:0")
			m := &grpcMesh{service: unique("grpc-restart")}
			grpcAddr := freePort(t)
			m.callee = startSidecar(t, "grpc-health-callee", grpcHealthCalleeConfig, map[string]string{
				"id": unique("gcallee"), "broker": b.url, "service": m.service, "target": app,
			})
			m.caller = startSidecar(t, "grpc-caller", grpcCallerConfig, map[string]string{
				"id": unique("gcaller"), "broker": b.url, "service": m.service, "grpc": grpcAddr,
			})
			m.connect(t, grpcAddr)
			unary := func() error {
				_, err := m.client.Unary(testCtx(t, 2*time.Second), &testpb.EchoRequest{Message: "hi"})
				return err
			}
			// The health check passes, so the instance is announced healthy.
			eventually(t, 10*time.Second, "a call served by the health-checked application", func() bool { return unary() == nil })

			stop()
			// Away for 5 s: calls fail as unavailable (the application, then
			// its instance, found unhealthy). A call sent as the instance
			// leaves its queue group may wait there until its deadline
			// (RabbitMQ, and Kafka, which tells no publisher that nobody
			// reads), until the callers hear it is unhealthy.
			for down := time.Now(); time.Since(down) < 5*time.Second; time.Sleep(250 * time.Millisecond) {
				if err := unary(); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
					t.Fatalf("while the application is down: %v, want Unavailable (or DeadlineExceeded)", err)
				}
			}

			serveEchoWithHealth(t, app)
			back := time.Now()
			eventually(t, 10*time.Second, "a call served after the application came back", func() bool { return unary() == nil })
			// A health check every 200 ms that reconnects at once, then the
			// instance's announcement: well under grpc-go's default backoff,
			// which after 5 s away waits about 4 s more before its next
			// attempt (4.1-4.7 s here, once 0.6 s). The bound cannot tell
			// the reconnect at once from the 1 s backoff cap alone (0.3-1.1
			// s): TestGRPCAppReconnects does.
			took := time.Since(back)
			t.Logf("served again %v after the application came back", took)
			if took > 3*time.Second {
				t.Errorf("calls were served again %v after the application came back; want within 3s", took)
			}
		})
	}
}
