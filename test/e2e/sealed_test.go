package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
)

const sealedCallerConfig = secureCallerConfig + `  services:
    {{service}}:
      seal: true
`

// TestSealedBodies: with adapter.seal and the caller's services.<s>.seal,
// a call and its answer cross the broker as ciphertext (a body marker
// seen nowhere on the service's subject or the caller's inbox), the call
// works, and a request sent in the clear is rejected (unsealed) before
// the application.
func TestSealedBodies(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			testSealedBodies(t, b)
		})
	}
}

func testSealedBodies(t *testing.T, b brokerCase) {
	p := newPKI(t, broker.DefaultMesh)
	m := &secureMesh{pki: p, service: unique("sealed"), port: freePort(t)}
	m.calleeCert = p.issue(m.service, time.Hour, time.Now())
	m.callerCert = p.issue("web", time.Hour, time.Now())
	app := httptest.NewServer(echoApp())
	t.Cleanup(app.Close)
	callerID := unique("caller")
	ctx := testCtx(t, 60*time.Second)
	conn, err := broker.Open(ctx, b.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	subjects := broker.NewSubjects("")
	seen := make(chan []byte, 64)
	snoop := func(_ context.Context, data []byte) {
		select {
		case seen <- data:
		default:
		}
	}
	for _, s := range []string{subjects.Service(m.service), subjects.Inbox(callerID)} {
		if _, err := conn.Subscribe(ctx, s, snoop); err != nil {
			t.Fatal(err)
		}
	}
	m.callee = startSidecar(t, "sealed-callee", secureCalleeConfig, m.calleeCert.vars(map[string]string{
		"id": unique("callee"), "broker": b.url, "service": m.service, "target": app.URL, "extra": "  seal: true\n",
	}))
	m.caller = startSidecar(t, "sealed-caller", sealedCallerConfig, m.callerCert.vars(map[string]string{
		"id": callerID, "broker": b.url, "service": m.service, "http": freePort(t), "port": m.port,
	}))
	marker := []byte("MARKER-of-a-secret-body")
	resp, body := do(t, newRequest(t, "POST", "http://"+m.port+"/echo", marker))
	if resp.StatusCode != 200 || !bytes.Equal(body, marker) {
		t.Fatalf("sealed call = %d %q, want 200 and the body echoed", resp.StatusCode, body)
	}
	var n int
	for done := false; !done; {
		select {
		case data := <-seen:
			n++
			if bytes.Contains(data, marker) {
				t.Errorf("the broker carried the body in the clear (%d bytes)", len(data))
			}
		case <-time.After(time.Second):
			done = true
		}
	}
	if n < 2 {
		t.Errorf("saw %d envelopes on the broker, want the request and its answer", n)
	}

	// A body streamed each way (an upload of unknown length, an answer
	// over a message): frames and grants cross both inboxes, sealed for
	// the service on the other side of the call.
	big := bytes.Repeat([]byte("0123456789abcdef"), (3<<20)/16)
	pr, pw := io.Pipe()
	go func() {
		for off := 0; off < len(big); off += 64 << 10 {
			if _, err := pw.Write(big[off:min(off+64<<10, len(big))]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	up := newRequest(t, "POST", "http://"+m.port+"/echo", nil)
	up.Body, up.ContentLength = pr, -1
	resp, body = do(t, up)
	if resp.StatusCode != 200 || !bytes.Equal(body, big) {
		t.Fatalf("sealed streamed call = %d, %d bytes (%s), want 200 and the %d bytes echoed", resp.StatusCode, len(body), resp.Header.Get("X-Busmesh-Error"), len(big))
	}

	// In the clear, though authenticated: rejected.
	web := newForger(t, m.callerCert, m.calleeCert)
	req := &envelope.Request{ID: 77, Source: "mallory", SourceService: "web", Service: m.service, Protocol: envelope.ProtocolHTTP,
		Method: "GET", Path: "/", ReplyTo: subjects.Inbox(unique("mallory")), Deadline: time.Now().Add(10 * time.Second).UnixNano()}
	if err := conn.Publish(ctx, subjects.Service(m.service), web.seal(req, time.Now())); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "an unsealed request rejected", func() bool {
		return rejected(m.callee, "adapter", "unsealed") == 1
	})
}
