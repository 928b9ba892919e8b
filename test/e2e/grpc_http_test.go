package e2e

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/test/testpb"
)

// grpcOnHTTPCallerConfig is an ambassador with HTTP ports only: the shared
// one and one for the service.
const grpcOnHTTPCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: grpc-caller
  http: {{http}}
  upstreams:
    {{service}}: {{port}}
  grpc_routes:
    "busmesh.test.v1.Echo/ClientStream": {{service}}
  timeout: 10s
`

// TestGRPCOnHTTPPorts: a gRPC client pointed at the ambassador's HTTP
// ports is served as on the gRPC port, every kind of call: the
// per-service port sends it to its service whatever the :authority, the
// shared port routes it by grpc_routes, then by :authority. Before, the
// call was carried as an HTTP request and the gRPC application's adapter
// answered 502.
func TestGRPCOnHTTPPorts(t *testing.T) {
	for _, b := range brokers(t) {
		if b.name != "nats" { // the ambassador's side alone: one broker shows it
			continue
		}
		requireBroker(t, b)
		echo := startEchoServer(t)
		m := &grpcMesh{service: unique("grpc-on-http")}
		shared, port := freePort(t), freePort(t)
		m.callee = startSidecar(t, "grpc-callee", grpcCalleeConfig, map[string]string{
			"id": unique("gcallee"), "broker": b.url, "service": m.service, "target": echo,
		})
		m.caller = startSidecar(t, "grpc-on-http-caller", grpcOnHTTPCallerConfig, map[string]string{
			"id": unique("gcaller"), "broker": b.url, "service": m.service, "http": shared, "port": port,
		})

		t.Run("ServicePort", func(t *testing.T) {
			m.connect(t, port)
			t.Run("Unary", m.testUnary)
			t.Run("AnyAuthority", func(t *testing.T) {
				// No service in :authority, a method grpc_routes does not
				// name: the port's service all the same.
				resp, err := m.byRoute.Unary(testCtx(t, 10*time.Second), &testpb.EchoRequest{Message: "by port"})
				if err != nil || resp.Message != "by port" {
					t.Errorf("Unary on the service's port without its :authority = %v, %v; want it echoed", resp, err)
				}
			})
			t.Run("StatusAndDetails", m.testStatus)
			t.Run("Deadline", m.testDeadline)
			t.Run("ServerStream", m.testServerStream)
			t.Run("ClientStream", m.testClientStream)
			t.Run("Bidi", m.testBidi)
			t.Run("CancelMidway", m.testCancel)
		})
		t.Run("SharedPort", func(t *testing.T) {
			m.connect(t, shared)
			t.Run("Unary", m.testUnary)               // :authority names the service
			t.Run("ClientStream", m.testClientStream) // grpc_routes does
			conn, err := grpc.NewClient(shared, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx := testCtx(t, 10*time.Second)
			_, err = testpb.NewEchoClient(conn).Unary(ctx, &testpb.EchoRequest{Message: "nowhere"})
			if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "no-route") {
				t.Errorf("a call that names no service on the shared port: %v; want Unimplemented no-route, as the gRPC port answers", err)
			}
		})
	}
}
