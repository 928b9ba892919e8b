package e2e

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/busmesh/busmesh/test/testpb"
)

const grpcBrokerSplitCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: grpc-caller
  grpc: {{grpc}}
  grpc_routes:
    "busmesh.test.v1.Echo/ClientStream": {{service}}
  timeout: 10s
  brokers:
    second: {{url}}
  services:
    {{service}}:
      brokers: {primary: 0, second: 100}
`

// TestBrokerSplitGRPC: gRPC streams over the second broker. The caller's
// sidecar is on NATS; the service runs only on the second broker, where
// its brokers weights send every call. A server stream (1,000 messages,
// in order, trailers, x-busmesh-broker), a client stream (10,000) and a
// bidi stream (10,000 each way) go through.
func TestBrokerSplitGRPC(t *testing.T) {
	all := brokers(t)
	primary := all[0]
	for _, second := range all[1:] {
		t.Run("nats-to-"+second.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, primary)
			requireBroker(t, second)
			echo := startEchoServer(t)
			m := &grpcMesh{service: unique("grpc")}
			grpcAddr := freePort(t)
			m.callee = startSidecar(t, "grpc-callee", grpcCalleeConfig, map[string]string{
				"id": unique("gcallee"), "broker": second.url, "service": m.service, "target": echo,
			})
			m.caller = startSidecar(t, "grpc-caller", grpcBrokerSplitCallerConfig, map[string]string{
				"id": unique("gcaller"), "broker": primary.url, "service": m.service, "grpc": grpcAddr, "url": second.url,
			})
			m.connect(t, grpcAddr)
			var header metadata.MD
			eventually(t, 20*time.Second, "the service on "+second.name+" answers", func() bool {
				_, err := m.client.Unary(testCtx(t, 5*time.Second), &testpb.EchoRequest{Message: "hello"}, grpc.Header(&header))
				return err == nil
			})
			if got := header.Get("x-busmesh-broker"); len(got) != 1 || got[0] != "second" {
				t.Errorf("x-busmesh-broker = %v, want second", got)
			}
			t.Run("ServerStream", m.testServerStream)
			t.Run("ClientStream", m.testClientStream)
			t.Run("Bidi", m.testBidi)
		})
	}
}
