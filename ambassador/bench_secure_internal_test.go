package ambassador

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/secure"
	"github.com/busmesh/busmesh/internal/testutil"
)

// secureLoop is loopBroker with security on: it answers certificate
// requests with the service's certificate and, as the service's adapter
// would, opens every request with the service's Guard and seals the
// answer. What remains is the ambassador's cost plus the adapter's
// verification and sealing.
type secureLoop struct {
	mu       sync.Mutex
	handlers map[string]broker.Handler
	service  *secure.Guard
	cert     []byte
	resp     envelope.Response
}

func (l *secureLoop) Publish(ctx context.Context, subject string, data []byte) error {
	switch {
	case strings.HasPrefix(subject, "busmesh.default.certs."):
		_, msg, err := envelope.Unwrap(data)
		if err != nil {
			return err
		}
		var req envelope.Request
		if err := req.Unmarshal(msg); err != nil {
			return err
		}
		out := envelope.Response{ID: req.ID, Status: 200, Body: l.cert}
		l.deliver(ctx, req.ReplyTo, out.AppendEnvelope(nil))
	case strings.HasPrefix(subject, "busmesh.default.svc."):
		e, from, err := l.service.Open(data)
		if err != nil {
			return err
		}
		var req envelope.Request
		if err := req.Unmarshal(e.Msg); err != nil {
			return err
		}
		l.service.Bind(req.ReplyTo, from)
		r := l.resp
		r.ID, r.Body = req.ID, req.Body // echo
		b := r.AppendEnvelope(make([]byte, 0, r.EncodedSize()+160))
		if b, err = l.service.Seal(context.Background(), req.ReplyTo, b); err != nil { // the adapter's own context, not the caller's
			return err
		}
		l.deliver(ctx, req.ReplyTo, b)
	}
	return nil
}

func (l *secureLoop) deliver(ctx context.Context, subject string, data []byte) {
	l.mu.Lock()
	h := l.handlers[subject]
	l.mu.Unlock()
	if h != nil {
		h(ctx, data)
	}
}

func (l *secureLoop) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	l.mu.Lock()
	l.handlers[subject] = h
	l.mu.Unlock()
	return nopSub{}, nil
}

func (l *secureLoop) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (l *secureLoop) Close() error { return nil }

func newSecureBenchAmbassador(b *testing.B) *Ambassador {
	ca := testutil.NewMeshCA(b, broker.DefaultMesh)
	orders := ca.Source(b, "orders")
	lb := &secureLoop{handlers: map[string]broker.Handler{}, cert: orders.Current().Cert().Raw,
		resp: envelope.Response{Status: 200, Instance: "i-1",
			Headers: []string{"Content-Type", "application/octet-stream", "Date", "Tue, 24 Nov 2026 10:00:00 GMT"}}}
	lb.service = secure.New(secure.Options{Source: orders, Broker: lb, Sidecar: "orders-1"})
	guard := secure.New(secure.Options{Source: ca.Source(b, "bench"), Broker: lb, Sidecar: "bench"})
	if err := guard.StartAmbassador(context.Background()); err != nil {
		b.Fatal(err)
	}
	cfg := config.NewAmbassador()
	cfg.Service = "bench"
	a, err := New(context.Background(), Options{Config: cfg, Sidecar: "bench", Broker: lb, Security: guard})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkAmbassadorHTTPSecure is BenchmarkAmbassadorHTTP with security
// on: the ambassador seals the request and opens the answer, and the
// loop broker, as the adapter, opens the request and seals the answer.
func BenchmarkAmbassadorHTTPSecure(b *testing.B) {
	benchHTTP(b, newSecureBenchAmbassador(b), "User-Agent", "bench", "Accept", "*/*")
}
