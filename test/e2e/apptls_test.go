package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/busmesh/busmesh/internal/testutil"
	"github.com/busmesh/busmesh/test/testpb"
)

// appTLSCalleeConfig is an adapter in front of an application that serves
// only TLS and only to clients with a certificate of its CA.
const appTLSCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  target: {{target}}
  tls:
    ca: {{ca}}
    server_name: app.internal
    cert: {{cert}}
    key: {{key}}
  health:
    {{health}}
    interval: 200ms
`

// TestAppTLS: the adapter calls an https:// and a grpcs:// application
// that take only clients with a certificate of their CA, verifying the
// application's certificate against adapter.tls.ca and server_name: plain
// calls, a WebSocket upgrade and health checks over TLS, a client
// certificate rotated on disk shown on the next connection, and an
// application whose certificate is not trusted answered 502. The broker
// plays no part in it; NATS carries the calls.
func TestAppTLS(t *testing.T) {
	b := brokers(t)[0]
	requireBroker(t, b)
	ca := testutil.NewCA(t, "app CA")
	t.Run("HTTPS", func(t *testing.T) { testAppHTTPS(t, b, ca) })
	t.Run("GRPCS", func(t *testing.T) { testAppGRPCS(t, b, ca) })
	t.Run("Untrusted", func(t *testing.T) { testAppUntrusted(t, b, ca) })
}

func testAppHTTPS(t *testing.T, b brokerCase, ca *testutil.CA) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err == nil {
			_ = c.Write(r.Context(), typ, append([]byte(clientCN(r.TLS)+":"), msg...))
		}
		c.Close(websocket.StatusNormalClosure, "")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("close") {
			w.Header().Set("Connection", "close") // the next call needs a new connection
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Client-CN", clientCN(r.TLS))
		w.Write(body)
	})
	app := httptest.NewUnstartedServer(mux)
	app.TLS = appServerTLS(t, ca)
	app.StartTLS()
	t.Cleanup(app.Close)

	cert, key := clientFiles(t, ca, "adapter-one")
	service, port := unique("tls"), freePort(t)
	startSidecar(t, "tls-callee", appTLSCalleeConfig, map[string]string{
		"id": unique("tlscallee"), "broker": b.url, "service": service, "target": app.URL,
		"ca": ca.File, "cert": cert, "key": key, "health": "http: /healthz",
	})
	startSidecar(t, "tls-caller", callerConfig, map[string]string{
		"id": unique("tlscaller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
	})

	checkAppTLS(t, b, app.URL, ca.File, cert, key, "http: /healthz", "health check GET /healthz answers 200")

	call := func(path string) string {
		t.Helper()
		resp, err := http.Post("http://"+port+path, "text/plain", strings.NewReader("over tls"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "over tls" {
			t.Fatalf("POST %s: %d %q (X-Busmesh-Error %q), want 200 with the body echoed", path, resp.StatusCode, body, resp.Header.Get("X-Busmesh-Error"))
		}
		return resp.Header.Get("X-Client-CN")
	}
	if cn := call("/echo"); cn != "adapter-one" {
		t.Errorf("the application saw client certificate %q, want adapter-one", cn)
	}

	ctx := testCtx(t, 10*time.Second)
	ws, _, err := websocket.Dial(ctx, "ws://"+port+"/ws", nil)
	if err != nil {
		t.Fatalf("WebSocket through the mesh to an https application: %v", err)
	}
	if err := ws.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || string(msg) != "adapter-one:hi" {
		t.Errorf("WebSocket echo = %q, %v; want adapter-one:hi", msg, err)
	}
	ws.CloseNow()

	// A rotated certificate: written over the files, it is shown on the
	// adapter's next connection (the files are looked at once a second).
	newCert, newKey := clientFiles(t, ca, "adapter-two")
	for _, f := range [][2]string{{newCert, cert}, {newKey, key}} {
		if err := os.Rename(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "the rotated client certificate on a new connection", func() bool {
		return call("/echo?close") == "adapter-two"
	})
}

func testAppGRPCS(t *testing.T, b brokerCase, ca *testutil.CA) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The client certificate's name comes back in a header.
	tellCN := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				_ = grpc.SetHeader(ctx, metadata.Pairs("x-client-cn", clientCN(&info.State)))
			}
		}
		return h(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(appServerTLS(t, ca))), grpc.UnaryInterceptor(tellCN))
	testpb.RegisterEchoServer(srv, testpb.Server{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	cert, key := clientFiles(t, ca, "grpc-adapter")
	service, grpcAddr := unique("grpcs"), freePort(t)
	startSidecar(t, "grpcs-callee", appTLSCalleeConfig, map[string]string{
		"id": unique("gscallee"), "broker": b.url, "service": service, "target": "grpcs://" + lis.Addr().String(),
		"ca": ca.File, "cert": cert, "key": key, "health": "grpc: true",
	})
	startSidecar(t, "grpcs-caller", grpcCallerConfig, map[string]string{
		"id": unique("gscaller"), "broker": b.url, "service": service, "grpc": grpcAddr,
	})
	checkAppTLS(t, b, "grpcs://"+lis.Addr().String(), ca.File, cert, key, "grpc: true", "health check grpc.health.v1 on "+lis.Addr().String()+": SERVING")
	// A client certificate the application refuses: in TLS 1.3 the
	// refusal comes after the client's side of the handshake, and the check
	// still sees it.
	strangerCert, strangerKey := clientFiles(t, testutil.NewCA(t, "stranger CA"), "stranger")
	file := writeFile(t, "check.yaml", "id: "+unique("check")+"\nbroker: "+b.url+"\nadmin: "+freePort(t)+
		"\nadapter:\n  service: "+unique("svc")+"\n  target: grpcs://"+lis.Addr().String()+"\n  tls:\n    ca: "+ca.File+
		"\n    server_name: app.internal\n    cert: "+strangerCert+"\n    key: "+strangerKey+"\n")
	if code, stdout, stderr := runCLI(t, nil, "check", "--config", file); code != 1 || !strings.Contains(stdout, ": TLS:") {
		t.Errorf("busmesh check with a client certificate the application refuses: exit %d, want 1 with a TLS failure\n%s%s", code, stdout, stderr)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(service+".mesh"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var header metadata.MD
	resp, err := testpb.NewEchoClient(conn).Unary(testCtx(t, 10*time.Second), &testpb.EchoRequest{Message: "over tls"}, grpc.Header(&header))
	if err != nil {
		t.Fatalf("Unary through the mesh to a grpcs application: %v", err)
	}
	if resp.Message != "over tls" {
		t.Errorf("Unary = %q, want the message echoed", resp.Message)
	}
	if cn := header.Get("x-client-cn"); len(cn) != 1 || cn[0] != "grpc-adapter" {
		t.Errorf("the application saw client certificate %q, want grpc-adapter", cn)
	}
}

// testAppUntrusted: an adapter that trusts another CA refuses the
// application's certificate, and the caller gets 502 app-unreachable, not
// an answer from an application it could not verify.
func testAppUntrusted(t *testing.T, b brokerCase, ca *testutil.CA) {
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("unverified"))
	}))
	app.TLS = appServerTLS(t, ca)
	app.TLS.ClientAuth = tls.NoClientCert
	app.StartTLS()
	t.Cleanup(app.Close)

	other := testutil.NewCA(t, "another CA")
	cert, key := clientFiles(t, other, "adapter")
	service, port := unique("untrusted"), freePort(t)
	startSidecar(t, "untrusted-callee", strings.Replace(appTLSCalleeConfig, "  health:\n    {{health}}\n    interval: 200ms\n", "", 1), map[string]string{
		"id": unique("ucallee"), "broker": b.url, "service": service, "target": app.URL,
		"ca": other.File, "cert": cert, "key": key,
	})
	startSidecar(t, "untrusted-caller", callerConfig, map[string]string{
		"id": unique("ucaller"), "broker": b.url, "service": service, "http": freePort(t), "port": port,
	})
	file := writeFile(t, "check.yaml", "id: "+unique("check")+"\nbroker: "+b.url+"\nadmin: "+freePort(t)+
		"\nadapter:\n  service: "+unique("svc")+"\n  target: "+app.URL+"\n  tls:\n    ca: "+other.File+"\n")
	code, stdout, stderr := runCLI(t, nil, "check", "--config", file)
	if code != 1 || !strings.Contains(stdout, "[FAIL] application "+app.URL+": TLS:") || !strings.Contains(stdout, "check adapter.tls") {
		t.Errorf("busmesh check on an application with an untrusted certificate: exit %d, want 1 with a TLS failure and adapter.tls to check\n%s%s", code, stdout, stderr)
	}

	resp, err := http.Get("http://" + port + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Busmesh-Error") != "app-unreachable" ||
		!strings.Contains(string(body), "certificate") {
		t.Errorf("an application with an untrusted certificate: %d %q (X-Busmesh-Error %q), want 502 app-unreachable saying why (the certificate)",
			resp.StatusCode, body, resp.Header.Get("X-Busmesh-Error"))
	}
}

// checkAppTLS runs `busmesh check` on an adapter config with adapter.tls:
// it reaches the application and passes its health check as the adapter
// would, over TLS with a client certificate.
func checkAppTLS(t *testing.T, b brokerCase, target, ca, cert, key, health, healthOK string) {
	t.Helper()
	file := writeFile(t, "check.yaml", "id: "+unique("check")+"\nbroker: "+b.url+"\nadmin: "+freePort(t)+
		"\nadapter:\n  service: "+unique("svc")+"\n  target: "+target+"\n  tls:\n    ca: "+ca+
		"\n    server_name: app.internal\n    cert: "+cert+"\n    key: "+key+"\n  health:\n    "+health+"\n")
	code, stdout, stderr := runCLI(t, nil, "check", "--config", file)
	if code != 0 || !strings.Contains(stdout, "[ok]   "+healthOK) {
		t.Errorf("busmesh check on %s: exit %d, want 0 and %q\n%s%s", target, code, healthOK, stdout, stderr)
	}
}

func clientCN(s *tls.ConnectionState) string {
	if s == nil || len(s.PeerCertificates) == 0 {
		return ""
	}
	return s.PeerCertificates[0].Subject.CommonName
}

// appServerTLS is an application's TLS: a certificate of ca for
// app.internal only (the adapter must verify server_name, not the IP it
// dials), and a client certificate of ca required.
func appServerTLS(t *testing.T, ca *testutil.CA) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "app.internal")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
	}
}

// clientFiles writes a client certificate of ca for cn and its key, and
// returns their files.
func clientFiles(t *testing.T, ca *testutil.CA, cn string) (cert, key string) {
	return ca.WriteFiles(t, ca.Client(t, cn), cn)
}
