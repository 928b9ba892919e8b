package secure

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// certMethod marks a certificate request.
const certMethod = "BUSMESH-CERT"

// fetchRetry is how often an unanswered certificate request is sent
// again: the service's adapters may be starting.
const fetchRetry = 500 * time.Millisecond

// serviceCert is an ambassador's copy of a service's certificate.
type serviceCert struct {
	cur        atomic.Pointer[fetched]
	refreshing atomic.Bool

	mu sync.Mutex // serialises the first fetch
}

type fetched struct {
	peer *identity.Peer
	at   time.Time
}

// serviceCert returns service's verified certificate: the one fetched
// before while it is valid (asking again in the background every
// Refresh), or a new one, asked for until ctx ends.
func (g *Guard) serviceCert(ctx context.Context, service string) (*identity.Peer, error) {
	v, ok := g.certs.Load(service)
	if !ok {
		v, _ = g.certs.LoadOrStore(service, &serviceCert{})
	}
	sc := v.(*serviceCert)
	if f := sc.cur.Load(); f != nil && g.usable(f.peer) {
		if time.Since(f.at) > g.refresh && sc.refreshing.CompareAndSwap(false, true) {
			g.wg.Go(func() {
				defer sc.refreshing.Store(false)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if p, err := g.fetch(ctx, service); err == nil {
					sc.cur.Store(&fetched{peer: p, at: time.Now()})
				} else {
					g.logger.Warn("certificate refresh failed, keeping the current one", telemetry.KeyService, service, telemetry.KeyErr, err)
				}
			})
		}
		return f.peer, nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if f := sc.cur.Load(); f != nil && g.usable(f.peer) {
		return f.peer, nil
	}
	p, err := g.fetch(ctx, service)
	if err != nil {
		return nil, err
	}
	sc.cur.Store(&fetched{peer: p, at: time.Now()})
	return p, nil
}

// usable reports whether a fetched certificate is still valid.
func (g *Guard) usable(p *identity.Peer) bool {
	_, err := g.src.Current().Verifier().Peer(p.KeyID())
	return err == nil
}

// fetch asks service's adapters for its certificate until one answers
// with a certificate of the mesh CA that names service, or ctx ends.
func (g *Guard) fetch(ctx context.Context, service string) (*identity.Peer, error) {
	id := g.fetchID.Add(1)
	answers := make(chan []byte, 1)
	g.waiting.Store(id, answers)
	defer g.waiting.Delete(id)
	cur := g.src.Current()
	req := envelope.Request{ID: id, Source: g.sidecar, SourceService: cur.Service(), Service: service,
		Method: certMethod, ReplyTo: g.subjects.CertsReply(g.sidecar)}
	msg := req.AppendEnvelope(nil)
	subject := g.subjects.Certs(service)
	g.mu.Lock()
	over := append([]broker.Broker{g.b}, g.more...)
	g.mu.Unlock()
	t := time.NewTicker(fetchRetry)
	defer t.Stop()
	last := ErrNoReceiver
	for {
		// Over every broker: the service may run on another one only
		// (calls split over brokers); any answer is checked against the
		// mesh CA, whichever broker carried it. The others are asked
		// apart, each for a retry's time at most, so one that is down
		// does not hold up the sidecar's own.
		for _, b := range over[1:] {
			if broker.Connected(b) {
				go func() {
					pctx, cancel := context.WithTimeout(ctx, fetchRetry)
					defer cancel()
					_ = b.Publish(pctx, subject, msg) // unanswered, it is asked again
				}()
			}
		}
		if err := over[0].Publish(ctx, subject, msg); err != nil {
			last = err
		}
		select {
		case der := <-answers:
			p, err := cur.VerifyPeer(der)
			if err == nil && p.Service() != service {
				err = fmt.Errorf("%w: asked for %s, got %s's", identity.ErrMalformed, service, p.Service())
			}
			if err == nil {
				g.logger.Debug("service certificate", telemetry.KeyService, service, "key_id", p.KeyID().String(),
					"not_after", p.Cert().NotAfter)
				return p, nil
			}
			last = err // a wrong answer: keep asking
			g.logger.Warn("certificate answer rejected", telemetry.KeyService, service, telemetry.KeyErr, err)
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("certificate of %s: %w (last: %w)", service, ctx.Err(), last)
		}
	}
}

// StartAmbassador subscribes to the sidecar's certificate answers.
func (g *Guard) StartAmbassador(ctx context.Context) error {
	sub, err := g.b.Subscribe(ctx, g.subjects.CertsReply(g.sidecar), g.handleCertAnswer)
	if err != nil {
		return fmt.Errorf("certificate inbox: %w", err)
	}
	g.mu.Lock()
	g.subs = append(g.subs, sub)
	g.mu.Unlock()
	return nil
}

// AddBroker has the ambassador ask for certificates over b too, one of
// its other brokers (ambassador.brokers): it subscribes the certificate
// answers there. Call it at start, before calls.
func (g *Guard) AddBroker(ctx context.Context, b broker.Broker) error {
	sub, err := b.Subscribe(ctx, g.subjects.CertsReply(g.sidecar), g.handleCertAnswer)
	if err != nil {
		return fmt.Errorf("certificate inbox: %w", err)
	}
	g.mu.Lock()
	g.subs = append(g.subs, sub)
	g.more = append(g.more, b)
	g.mu.Unlock()
	return nil
}

func (g *Guard) handleCertAnswer(_ context.Context, data []byte) {
	e, err := envelope.Open(data)
	if err != nil || e.Kind != envelope.KindResponse {
		return
	}
	var r envelope.Response
	if r.Unmarshal(e.Msg) != nil {
		return
	}
	if v, ok := g.waiting.Load(r.ID); ok {
		select {
		case v.(chan []byte) <- r.Body:
		default:
		}
	}
}

// ServeCerts answers requests for service's certificate with the current
// one, in the service's queue group.
func (g *Guard) ServeCerts(ctx context.Context, service string) error {
	subject := g.subjects.Certs(service)
	inboxes := g.subjects.Inbox("")
	sub, err := g.b.QueueSubscribe(ctx, subject, subject, func(ctx context.Context, data []byte) {
		e, err := envelope.Open(data)
		if err != nil || e.Kind != envelope.KindRequest {
			return
		}
		var req envelope.Request
		if req.Unmarshal(e.Msg) != nil || req.Method != certMethod || req.Service != service {
			return
		}
		// Answer on certificate inboxes only: the request is not
		// authenticated, so it must not aim the answer anywhere else.
		if !strings.HasPrefix(req.ReplyTo, inboxes) || !strings.HasSuffix(req.ReplyTo, ".certs") {
			return
		}
		out := envelope.Response{ID: req.ID, Status: 200, Body: g.src.Current().Cert().Raw}
		if err := g.b.Publish(ctx, req.ReplyTo, out.AppendEnvelope(nil)); err != nil && !errors.Is(err, context.Canceled) {
			g.logger.Warn("certificate answer not sent", telemetry.KeySubject, req.ReplyTo, telemetry.KeyErr, err)
		}
	})
	if err != nil {
		return fmt.Errorf("certificate subject %s: %w", subject, err)
	}
	g.mu.Lock()
	g.subs = append(g.subs, sub)
	g.mu.Unlock()
	return nil
}
