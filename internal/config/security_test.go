package config_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/identity"
)

// issue writes a CA of mesh and a certificate for service into dir and
// returns the identity section naming them.
func issue(t *testing.T, dir, mesh, service string) string {
	t.Helper()
	ca, err := identity.NewCA(mesh, 2*time.Hour, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(service, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := identity.WriteServiceFiles(dir, service, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("identity:\n  cert: %s\n  key: %s\n  ca: %s\n", cert, key, filepath.Join(dir, identity.CACertFile))
}

func TestSecurityConfig(t *testing.T) {
	dir := t.TempDir()
	id := issue(t, dir, "default", "orders")
	adapter := "adapter:\n  service: orders\n  target: http://127.0.0.1:8080\n"
	good := id + adapter + `  allow:
    - from: web
      methods: [GET, POST]
      paths: ["/orders/*", "/static/**"]
    - from: "*"
      grpc: ["/shop.v1.Orders/Get"]
`
	c, err := config.Parse("good.yaml", []byte(good), noEnv)
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	if !c.Secure() || len(c.Adapter.Allow) != 2 || c.Adapter.Allow[0].Paths[1] != "/static/**" {
		t.Errorf("parsed %+v, %+v", c.Identity, c.Adapter.Allow)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"missing file", "identity:\n  cert: /nonexistent.crt\n  key: /nonexistent.key\n  ca: /nonexistent-ca.crt\n" + adapter,
			`identity: cert "/nonexistent.crt", key "/nonexistent.key", ca "/nonexistent-ca.crt" do not load`},
		{"missing key", "identity:\n  cert: a.crt\n" + adapter, "identity.key: missing"},
		{"other service", id + "adapter:\n  service: billing\n  target: http://127.0.0.1:8080\n", `names service "orders", but adapter.service is "billing"`},
		{"other mesh", "mesh: prod\n" + id + adapter, `is of mesh "default", not this sidecar's mesh "prod"`},
		{"insecure and identity", "insecure: true\n" + id + adapter, "insecure: true with an identity section"},
		{"bad method", adapter + "  allow:\n    - from: web\n      methods: [FETCH]\n", `adapter.allow[0].methods[0]: "FETCH" is not an HTTP method`},
		{"bad path", adapter + "  allow:\n    - from: web\n      paths: [\"orders/[\"]\n", `adapter.allow[0].paths[0]: "orders/[" does not start with /`},
		{"bad glob", adapter + "  allow:\n    - from: web\n      paths: [\"/orders/[\"]\n", `adapter.allow[0].paths[0]: "/orders/[" is not a glob`},
		{"bad grpc", adapter + "  allow:\n    - from: web\n      grpc: [\"Orders.Get\"]\n", `adapter.allow[0].grpc[0]: "Orders.Get" is not a gRPC full method`},
		{"bad caller", adapter + "  allow:\n    - from: \"web.*\"\n", `adapter.allow[0].from: "web.*" has '.'`},
		{"not a list", adapter + "  allow: web\n", "adapter.allow: want a list"},
		{"seal without identity", adapter + "  seal: true\n", "adapter.seal: true needs an identity section"},
		{"caller seal without identity", "ambassador:\n  http: 127.0.0.1:0\n  services:\n    orders:\n      seal: true\n",
			"ambassador.services.orders.seal: true needs an identity section"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("bad.yaml", []byte(tc.yaml), noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
