package adapter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/testutil"
)

// recordingBroker keeps what is published, by subject.
type recordingBroker struct {
	mu  sync.Mutex
	out map[string][][]byte
}

func (r *recordingBroker) Publish(_ context.Context, subject string, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.out[subject] = append(r.out[subject], append([]byte(nil), data...))
	return nil
}

func (r *recordingBroker) published(subject string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out[subject]
}

func (r *recordingBroker) Subscribe(context.Context, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (r *recordingBroker) QueueSubscribe(context.Context, string, string, broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (r *recordingBroker) Close() error { return nil }

// TestReplyToIsTheCallersOwn: with identities and sealing, web calls
// orders. evil, another service of the mesh with a valid certificate,
// names web's inbox as its own reply_to (in a request for orders and in
// one for a service orders is not), sends a cancel for web's call under
// web's sidecar id, and a retry of web's call to be answered from the
// adapter's record. web's answer is still sealed for web alone, web's
// call is not cancelled, and evil gets no answer of web's.
func TestReplyToIsTheCallersOwn(t *testing.T) {
	ca := testutil.NewMeshCA(t, broker.DefaultMesh)
	web, evil, orders := ca.Source(t, "web"), ca.Source(t, "evil"), ca.Source(t, "orders")
	webGuard, evilGuard := secure.New(secure.Options{Source: web}), secure.New(secure.Options{Source: evil})
	subjects := broker.NewSubjects(broker.DefaultMesh)
	service := subjects.Service("orders")
	for _, g := range []struct {
		guard *secure.Guard
		src   *identity.Source
	}{{webGuard, web}, {evilGuard, evil}} {
		// Each caller has orders' certificate, as a certificate request
		// would have given it.
		peer, err := g.src.Current().VerifyPeer(orders.Current().Cert().Raw)
		if err != nil {
			t.Fatal(err)
		}
		g.guard.Bind(service, secure.Sender{Peer: peer, Local: g.src.Current(), Sealed: true})
		g.guard.Bind(subjects.AdapterInbox("orders-sc"), secure.Sender{Peer: peer, Local: g.src.Current(), Sealed: true})
		// and orders has the caller's, as its first request would carry it.
		if _, err := orders.Current().VerifyPeer(g.src.Current().Cert().Raw); err != nil {
			t.Fatal(err)
		}
	}

	release := make(chan struct{})
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // web's call is in flight while evil acts
		w.Write([]byte("web's private answer"))
	}))
	defer app.Close()
	var once sync.Once
	releaseApp := func() { once.Do(func() { close(release) }) }
	defer releaseApp()
	cfg := config.NewAdapter()
	cfg.Service, cfg.Instance, cfg.Target, cfg.Seal = "orders", "i-1", app.URL, true
	cfg.Allow = nil // any service of the mesh may call
	rec := &recordingBroker{out: map[string][][]byte{}}
	a, err := New(Options{Config: cfg, Sidecar: "orders-sc", Broker: rec, Security: secure.New(secure.Options{Source: orders})})
	if err != nil {
		t.Fatal(err)
	}
	seal := func(g *secure.Guard, subject string, m interface{ AppendEnvelope([]byte) []byte }) []byte {
		b, err := g.Seal(context.Background(), subject, m.AppendEnvelope(nil))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	webInbox := subjects.Inbox("web-sc")
	deadline := time.Now().Add(10 * time.Second).UnixNano()
	a.handleRequest(context.Background(), seal(webGuard, service, &envelope.Request{ID: 7, AttemptOf: 7, Source: "web-sc",
		SourceService: "web", Service: "orders", Method: "GET", Path: "/", ReplyTo: webInbox,
		Protocol: envelope.ProtocolHTTP, Deadline: deadline}))
	served := func() int {
		a.calls.mu.Lock()
		defer a.calls.mu.Unlock()
		return len(a.calls.m)
	}
	for served() == 0 {
		time.Sleep(time.Millisecond) // web's call is being served
	}

	// evil names web's inbox, in a request refused for its service and in
	// one it may make.
	a.handleRequest(context.Background(), seal(evilGuard, service, &envelope.Request{ID: 1, Source: "evil-sc", SourceService: "evil",
		Service: "not-orders", Method: "GET", Path: "/", ReplyTo: webInbox, Protocol: envelope.ProtocolHTTP}))
	// A cancel of web's call, sent under web's sidecar id.
	a.handleFrame(context.Background(), seal(evilGuard, a.inbox, &envelope.Frame{ID: 7, Source: "web-sc", Cancel: true, Error: "cancelled"}))
	if served() != 1 {
		t.Fatal("another service's cancel ended web's call")
	}
	releaseApp()
	a.pool.close()
	a.pool.wait()
	a.streams.wait()

	// A retry of web's call, to be answered from the record to evil.
	evilInbox := subjects.Inbox("evil-sc")
	a.handleRequest(context.Background(), seal(evilGuard, service, &envelope.Request{ID: 8, AttemptOf: 7, Source: "web-sc",
		SourceService: "evil", Service: "orders", Method: "GET", Path: "/", ReplyTo: evilInbox,
		Protocol: envelope.ProtocolHTTP, Deadline: deadline}))

	answers := rec.published(webInbox)
	if len(answers) != 1 {
		t.Fatalf("%d envelopes to web's inbox, want web's answer alone", len(answers))
	}
	if _, _, err := evilGuard.Open(answers[0]); err == nil {
		t.Error("evil opened the answer to web's call")
	}
	env, from, err := webGuard.Open(answers[0])
	if err != nil {
		t.Fatalf("web cannot open its answer: %v", err)
	}
	var out envelope.Response
	if err := out.Unmarshal(env.Msg); err != nil {
		t.Fatal(err)
	}
	if out.Status != 200 || string(out.Body) != "web's private answer" || from.Peer.Service() != "orders" {
		t.Errorf("web's answer: status %d, body %q, from %s", out.Status, out.Body, from.Peer.Service())
	}
	for _, m := range rec.published(evilInbox) {
		if env, _, err := evilGuard.Open(m); err == nil {
			var r envelope.Response
			if r.Unmarshal(env.Msg) == nil && string(r.Body) == "web's private answer" {
				t.Error("evil was answered web's call from the record")
			}
		}
	}
}
