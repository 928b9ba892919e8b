package e2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/test/testpb"
)

const policyRules = `  allow:
    - from: web
      methods: [GET]
      paths: ["/orders/*"]
    - from: web
      methods: [POST]
      paths: ["/orders"]
    - from: web
      grpc: ["/busmesh.test.v1.Echo/Unary"]
`

const secureGRPCCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
identity:
  cert: {{cert}}
  key: {{key}}
  ca: {{ca}}
ambassador:
  grpc: {{grpc}}
  timeout: 10s
`

// TestPolicy: the callee's allow rules let web GET /orders/* and POST
// /orders and call Echo/Unary; everything else, and every other caller,
// is answered 403 / PermissionDenied with X-Busmesh-Error: forbidden
// before the application sees it; every decision is counted.
func TestPolicy(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			testPolicy(t, b)
		})
	}
}

func testPolicy(t *testing.T, b brokerCase) {
	m := startSecureMesh(t, b, policyRules)
	// A second caller, of another service of the same mesh.
	billingPort := freePort(t)
	billing := m.pki.issue("billing", time.Hour, time.Now())
	startSidecar(t, "billing-caller", secureCallerConfig, billing.vars(map[string]string{
		"id": unique("billing"), "broker": b.url, "service": m.service, "http": freePort(t), "port": billingPort,
	}))
	cases := []struct {
		name, port, method, path string
		want                     int
	}{
		{"allowed", m.port, "GET", "/orders/7", 200},
		{"allowed POST", m.port, "POST", "/orders", 200},
		{"denied by path", m.port, "GET", "/admin/users", 403},
		{"denied by path depth", m.port, "GET", "/orders/7/items", 403},
		{"denied by method", m.port, "DELETE", "/orders/7", 403},
		{"denied by caller", billingPort, "GET", "/orders/7", 403},
		{"default deny", billingPort, "POST", "/anything", 403},
	}
	allowed := int64(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := m.appCalls.Load()
			resp, body := do(t, newRequest(t, c.method, "http://"+c.port+c.path, nil))
			if resp.StatusCode != c.want {
				t.Fatalf("%s %s = %d %q, want %d", c.method, c.path, resp.StatusCode, body, c.want)
			}
			if c.want == 403 {
				if got := resp.Header.Get("X-Busmesh-Error"); got != "forbidden" {
					t.Errorf("X-Busmesh-Error = %q, want forbidden", got)
				}
				if got := m.appCalls.Load(); got != before {
					t.Errorf("a denied call reached the application")
				}
			} else {
				allowed++
			}
		})
	}

	t.Run("grpc", func(t *testing.T) {
		echo := startEchoServer(t)
		service := unique("gsecure")
		calleeCert := m.pki.issue(service, time.Hour, time.Now())
		startSidecar(t, "grpc-secure-callee", secureCalleeConfig, calleeCert.vars(map[string]string{
			"id": unique("gcallee"), "broker": b.url, "service": service, "target": "grpc://" + echo,
			"extra": policyRules,
		}))
		grpcAddr := freePort(t)
		startSidecar(t, "grpc-secure-caller", secureGRPCCallerConfig, m.callerCert.vars(map[string]string{
			"id": unique("gcaller"), "broker": b.url, "grpc": grpcAddr,
		}))
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(service))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := testpb.NewEchoClient(conn)
		ctx := testCtx(t, 20*time.Second)
		if _, err := client.Unary(ctx, &testpb.EchoRequest{Message: "hi"}); err != nil {
			t.Fatalf("Unary (allowed) = %v", err)
		}
		var header, trailer metadata.MD
		stream, err := client.ServerStream(ctx, &testpb.EchoRequest{Message: "hi"}, grpc.Header(&header), grpc.Trailer(&trailer))
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("ServerStream (no rule) = %v, want PermissionDenied", err)
		}
		if got := append(header.Get("x-busmesh-error"), trailer.Get("x-busmesh-error")...); len(got) != 1 || got[0] != "forbidden" {
			t.Errorf("x-busmesh-error = %q, want forbidden", got)
		}
	})

	decisions := func(caller, verdict string) float64 {
		return m.callee.metric(fmt.Sprintf(`busmesh_authz_decisions_total{caller=%q,service=%q,verdict=%q}`, caller, m.service, verdict))
	}
	if got := decisions("web", "allow"); got != float64(allowed) {
		t.Errorf("decisions web allow = %v, want %d", got, allowed)
	}
	if got := decisions("web", "deny"); got != 3 {
		t.Errorf("decisions web deny = %v, want 3", got)
	}
	if got := decisions("billing", "deny"); got != 2 {
		t.Errorf("decisions billing deny = %v, want 2", got)
	}
	if got := m.appCalls.Load(); got != allowed {
		t.Errorf("the application saw %d calls, want %d", got, allowed)
	}
}
