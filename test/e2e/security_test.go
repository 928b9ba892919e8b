package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
)

const secureCalleeConfig = `# callee with an identity
id: {{id}}
broker: {{broker}}
admin: {{admin}}
log:
  level: debug
identity:
  cert: {{cert}}
  key: {{key}}
  ca: {{ca}}
adapter:
  service: {{service}}
  target: {{target}}
{{extra}}`

const secureCallerConfig = `# caller with an identity
id: {{id}}
broker: {{broker}}
admin: {{admin}}
log:
  level: debug
identity:
  cert: {{cert}}
  key: {{key}}
  ca: {{ca}}
ambassador:
  http: {{http}}
  upstreams:
    {{service}}: {{port}}
  timeout: 10s
`

// pki is a mesh CA and the identities it issued, in files.
type pki struct {
	t   *testing.T
	dir string
	ca  *identity.CA
}

func newPKI(t *testing.T, mesh string) *pki {
	t.Helper()
	ca, err := identity.NewCA(mesh, 48*time.Hour, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca}
	if err := ca.WriteFiles(p.dir); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pki) caFile() string { return filepath.Join(p.dir, identity.CACertFile) }

// cert is one issued identity's files.
type cert struct{ cert, key, ca string }

// issue gives service a certificate valid from now for ttl.
func (p *pki) issue(service string, ttl time.Duration, now time.Time) cert {
	p.t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(service, ttl, now)
	if err != nil {
		p.t.Fatal(err)
	}
	dir := filepath.Join(p.dir, unique(service))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	c, k, err := identity.WriteServiceFiles(dir, service, certPEM, keyPEM)
	if err != nil {
		p.t.Fatal(err)
	}
	return cert{c, k, p.caFile()}
}

func (c cert) vars(v map[string]string) map[string]string {
	v["cert"], v["key"], v["ca"] = c.cert, c.key, c.ca
	return v
}

// der is the certificate's DER.
func (c cert) der(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(c.cert)
	if err != nil {
		t.Fatal(err)
	}
	x, err := identity.ParseCert(b)
	if err != nil {
		t.Fatal(err)
	}
	return x.Raw
}

// forger seals envelopes as the holder of one identity would, for one
// receiver's certificate, with any timestamp.
type forger struct {
	t    *testing.T
	id   *identity.Identity
	key  *identity.PairKey
	cert []byte
}

func newForger(t *testing.T, from, to cert) *forger {
	t.Helper()
	id, err := identity.Load(from.cert, from.key, from.ca)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := id.VerifyPeer(to.der(t))
	if err != nil {
		t.Fatal(err)
	}
	key, err := id.SendKey(peer)
	if err != nil {
		t.Fatal(err)
	}
	return &forger{t: t, id: id, key: key, cert: id.Cert().Raw}
}

func (f *forger) seal(m interface{ AppendEnvelope([]byte) []byte }, ts time.Time) []byte {
	b := m.AppendEnvelope(nil)
	from, to := f.key.Sender(), f.key.Receiver()
	b = envelope.AppendCredentials(b, from[:], to[:], ts.UnixNano(), f.cert)
	return identity.AppendMAC(b, b, f.key)
}

// unsealable is an envelope naming a certificate the receiver must refuse
// before any key is agreed: its MAC is zeros.
func unsealable(m interface{ AppendEnvelope([]byte) []byte }, certDER []byte, receiver identity.KeyID) []byte {
	b := m.AppendEnvelope(nil)
	from := identity.KeyIDOf(certDER)
	b = envelope.AppendCredentials(b, from[:], receiver[:], time.Now().UnixNano(), certDER)
	b = append(b, 0x7a, 32) // field 15, 32 bytes
	return append(b, make([]byte, 32)...)
}

// countingApp counts the calls that reach it; /slow waits d.
func countingApp(calls *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if d, err := time.ParseDuration(r.URL.Query().Get("d")); err == nil {
			time.Sleep(d)
		}
		io.WriteString(w, "app:"+r.Method+" "+r.URL.Path)
	})
}

// secureMesh is a caller and a callee with identities, and the counting
// application behind the callee.
type secureMesh struct {
	pki           *pki
	service       string
	callee        *sidecar
	caller        *sidecar
	port          string
	calleeCert    cert
	callerCert    cert
	appCalls      atomic.Int64
	calleeCertDER []byte
}

func startSecureMesh(t *testing.T, b brokerCase, extra string) *secureMesh {
	t.Helper()
	m := &secureMesh{pki: newPKI(t, broker.DefaultMesh), service: unique("secure"), port: freePort(t)}
	m.calleeCert = m.pki.issue(m.service, 24*time.Hour, time.Now())
	m.callerCert = m.pki.issue("web", 24*time.Hour, time.Now())
	m.calleeCertDER = m.calleeCert.der(t)
	app := httptest.NewServer(countingApp(&m.appCalls))
	t.Cleanup(app.Close)
	m.callee = startSidecar(t, "secure-callee", secureCalleeConfig, m.calleeCert.vars(map[string]string{
		"id": unique("callee"), "broker": b.url, "service": m.service, "target": app.URL, "extra": extra,
	}))
	m.caller = startSidecar(t, "secure-caller", secureCallerConfig, m.callerCert.vars(map[string]string{
		"id": unique("caller"), "broker": b.url, "service": m.service, "http": freePort(t), "port": m.port,
	}))
	return m
}

func (m *secureMesh) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	return do(t, newRequest(t, "GET", "http://"+m.port+path, nil))
}

func rejected(s *sidecar, component, reason string) float64 {
	return s.metric(fmt.Sprintf(`busmesh_envelopes_rejected_total{component=%q,reason=%q}`, component, reason))
}

// TestSecurityRejections: with identities, every forged, altered, stale,
// replayed or misdirected envelope is rejected, counted by reason, and
// never reaches the application; a well-sealed one is served.
func TestSecurityRejections(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			testSecurityRejections(t, b)
		})
	}
}

func testSecurityRejections(t *testing.T, b brokerCase) {
	m := startSecureMesh(t, b, "")
	ctx := testCtx(t, 90*time.Second)
	if resp, body := m.get(t, "/hello"); resp.StatusCode != 200 || string(body) != "app:GET /hello" {
		t.Fatalf("a call through the secured mesh = %d %q, want 200", resp.StatusCode, body)
	}
	served := int64(1)

	conn, err := broker.Open(ctx, b.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	subjects := broker.NewSubjects("")
	svcSubject := subjects.Service(m.service)
	inbox := subjects.Inbox(unique("mallory"))
	answers := make(chan int32, 16)
	if _, err := conn.Subscribe(ctx, inbox, func(_ context.Context, data []byte) {
		if e, err := envelope.Open(data); err == nil && e.Kind == envelope.KindResponse {
			var r envelope.Response
			if r.Unmarshal(e.Msg) == nil {
				answers <- r.Status
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The envelopes the real caller sends, as anyone on the broker sees them.
	captured := make(chan []byte, 16)
	if _, err := conn.Subscribe(ctx, svcSubject, func(_ context.Context, data []byte) {
		select {
		case captured <- data:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}

	var nextID atomic.Uint64
	nextID.Store(1000)
	request := func(mod func(*envelope.Request)) *envelope.Request {
		r := &envelope.Request{ID: nextID.Add(1), Source: "mallory", SourceService: "web", Service: m.service,
			Protocol: envelope.ProtocolHTTP, Method: "GET", Path: "/hello", Headers: []string{"X-Test", "header-value"},
			Body: []byte("BODY-BODY"), ReplyTo: inbox, Deadline: time.Now().Add(10 * time.Second).UnixNano()}
		if mod != nil {
			mod(r)
		}
		return r
	}
	publish := func(data []byte) {
		t.Helper()
		if err := conn.Publish(ctx, svcSubject, data); err != nil {
			t.Fatal(err)
		}
	}
	web := newForger(t, m.callerCert, m.calleeCert)

	// A request sealed right is served: the forger seals as a sidecar does.
	publish(web.seal(request(nil), time.Now()))
	select {
	case st := <-answers:
		if st != 200 {
			t.Fatalf("a well-sealed request answered %d, want 200", st)
		}
		served++
	case <-ctx.Done():
		t.Fatal("a well-sealed request was not answered")
	}

	calleeKey := identity.KeyIDOf(m.calleeCertDER)
	otherCA := newPKI(t, broker.DefaultMesh).issue("web", time.Hour, time.Now())
	expired := m.pki.issue("web", time.Minute, time.Now().Add(-10*time.Minute))
	replace := func(b []byte, old, new string) []byte {
		i := bytes.Index(b, []byte(old))
		if i < 0 {
			t.Fatalf("%q not in the envelope", old)
		}
		copy(b[i:], new)
		return b
	}
	otherService := m.pki.issue(unique("other"), time.Hour, time.Now())
	// Captured from the real caller, sent again.
	if resp, _ := m.get(t, "/captured"); resp.StatusCode != 200 {
		t.Fatalf("call to capture: %d", resp.StatusCode)
	}
	served++
	var replay []byte
	for replay == nil {
		select {
		case data := <-captured:
			if e, err := envelope.Open(data); err == nil && e.Kind == envelope.KindRequest {
				var r envelope.Request
				if r.Unmarshal(e.Msg) == nil && r.Path == "/captured" {
					replay = data
				}
			}
		case <-ctx.Done():
			t.Fatal("the caller's request was not seen on the broker")
		}
	}

	cases := []struct {
		name, reason string
		data         []byte
	}{
		{"no credentials", "unauthenticated", request(nil).AppendEnvelope(nil)},
		{"certificate of another CA", "unknown-ca", unsealable(request(nil), otherCA.der(t), calleeKey)},
		{"expired certificate", "expired", unsealable(request(nil), expired.der(t), calleeKey)},
		{"tampered body", "bad-mac", replace(web.seal(request(nil), time.Now()), "BODY-BODY", "BODY-EVIL")},
		{"tampered header", "bad-mac", replace(web.seal(request(nil), time.Now()), "header-value", "header-evil!")},
		{"tampered path", "bad-mac", replace(web.seal(request(nil), time.Now()), "/hello", "/admin")},
		{"replay of a captured envelope", "replay", replay},
		{"stale timestamp", "stale", web.seal(request(nil), time.Now().Add(-2*time.Minute))},
		{"envelope for another service", "wrong-receiver", newForger(t, m.callerCert, otherService).seal(request(nil), time.Now())},
		{"request naming another service", "wrong-service", web.seal(request(func(r *envelope.Request) { r.Service = "other" }), time.Now())},
		{"source_service not the certificate's", "wrong-source", web.seal(request(func(r *envelope.Request) { r.SourceService = "admin" }), time.Now())},
	}
	want := map[string]float64{}
	for _, c := range cases {
		publish(c.data)
		want[c.reason]++
	}
	for reason, n := range want {
		eventually(t, 15*time.Second, "rejections for "+reason, func() bool {
			return rejected(m.callee, "adapter", reason) >= n
		})
		if got := rejected(m.callee, "adapter", reason); got != n {
			t.Errorf("rejected %s = %v, want %v", reason, got, n)
		}
	}
	select {
	case st := <-answers:
		t.Errorf("a rejected request was answered (%d)", st)
	case <-time.After(500 * time.Millisecond):
	}
	if got := m.appCalls.Load(); got != served {
		t.Errorf("the application saw %d calls, want %d: a rejected envelope reached it", got, served)
	}

	t.Run("forged answer", func(t *testing.T) {
		// While a real call is in flight, answers forged without
		// credentials and by another service of the mesh reach the
		// caller's inbox first; the caller gets the real answer.
		for len(captured) > 0 {
			<-captured
		}
		done := make(chan []byte, 1)
		go func() {
			resp, body := m.get(t, "/slow?d=1500ms")
			if resp.StatusCode != 200 {
				body = fmt.Appendf(nil, "status %d: %s", resp.StatusCode, body)
			}
			done <- body
		}()
		var real envelope.Request
		for !strings.HasPrefix(real.Path, "/slow") {
			select {
			case data := <-captured:
				if e, err := envelope.Open(data); err == nil && e.Kind == envelope.KindRequest {
					if real.Unmarshal(e.Msg) != nil {
						real = envelope.Request{}
					}
				}
			case <-ctx.Done():
				t.Fatal("the slow call was not seen on the broker")
			}
		}
		forged := &envelope.Response{ID: real.ID, Status: 200, Body: []byte("forged")}
		mallory := m.pki.issue(unique("mallory"), time.Hour, time.Now())
		if err := conn.Publish(ctx, real.ReplyTo, forged.AppendEnvelope(nil)); err != nil {
			t.Fatal(err)
		}
		if err := conn.Publish(ctx, real.ReplyTo, newForger(t, mallory, m.callerCert).seal(forged, time.Now())); err != nil {
			t.Fatal(err)
		}
		if body := <-done; string(body) != "app:GET /slow" {
			t.Errorf("the caller got %q, want the real answer", body)
		}
		served++
		if got := rejected(m.caller, "ambassador", "unauthenticated"); got != 1 {
			t.Errorf("ambassador rejected unauthenticated = %v, want 1", got)
		}
		if got := rejected(m.caller, "ambassador", "wrong-sender"); got != 1 {
			t.Errorf("ambassador rejected wrong-sender = %v, want 1", got)
		}
		if got := m.appCalls.Load(); got != served {
			t.Errorf("the application saw %d calls, want %d", got, served)
		}
	})
}
