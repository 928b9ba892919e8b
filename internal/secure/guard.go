package secure

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// DefaultRefresh is how often an ambassador asks for a service's
// certificate again, to follow a rotation; a rotated-out certificate
// still receives for identity.DefaultGrace, far longer.
const DefaultRefresh = 30 * time.Second

// Options configure a Guard.
type Options struct {
	// Source is the sidecar's identity, followed through rotations.
	Source *identity.Source
	// Broker carries the certificate requests and answers.
	Broker broker.Broker
	// Mesh is the mesh's name ("" is broker.DefaultMesh); Sidecar this
	// sidecar's id, which names its certificate inbox.
	Mesh, Sidecar string
	// Skew is the clock difference allowed for timestamps;
	// identity.DefaultSkew if 0.
	Skew time.Duration
	// Refresh is how often a service's certificate is asked for again;
	// DefaultRefresh if 0.
	Refresh time.Duration
	// Logger gets certificate fetches; nil discards.
	Logger *slog.Logger
	// SealFor reports whether requests to a service are sealed (their
	// message encrypted, not only authenticated); nil seals none. What
	// answers a sealed envelope is sealed too.
	SealFor func(service string) bool
}

// Guard is one sidecar's envelope security: it seals what the sidecar
// sends and opens what it takes. It is safe for concurrent use.
type Guard struct {
	src      *identity.Source
	replay   *identity.ReplayGuard
	b        broker.Broker
	subjects broker.Subjects
	sidecar  string
	refresh  time.Duration
	logger   *slog.Logger
	sealFor  func(string) bool

	last atomic.Int64 // the last timestamp sealed: each is later than the one before

	bound sync.Map // subject -> *bindings: receivers heard from, by service
	certs sync.Map // service -> *serviceCert: services' certificates (ambassador)

	fetchID atomic.Uint64
	waiting sync.Map // fetch id -> chan []byte

	mu   sync.Mutex
	subs []broker.Subscription
	// more are the ambassador's other brokers (AddBroker): certificate
	// requests go over them too.
	more []broker.Broker
	wg   sync.WaitGroup
}

// Sender is who sent an envelope that Open verified, and which of this
// sidecar's identities it addressed.
type Sender struct {
	Peer  *identity.Peer
	Local *identity.Identity
	// Sealed says the envelope's message was encrypted, not only
	// authenticated.
	Sealed bool
}

// New returns the Guard of the sidecar whose identity o.Source holds.
func New(o Options) *Guard {
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	return &Guard{
		src:      o.Source,
		replay:   identity.NewReplayGuard(identity.ReplayConfig{Skew: o.Skew}),
		b:        o.Broker,
		subjects: broker.NewSubjects(o.Mesh),
		sidecar:  o.Sidecar,
		refresh:  o.Refresh,
		logger:   telemetry.OrDiscard(o.Logger).With(telemetry.KeyComponent, "security"),
		sealFor:  o.SealFor,
	}
}

// Service is the service the sidecar's certificate names.
func (g *Guard) Service() string { return g.src.Current().Service() }

// Source is the identity the Guard follows: discovery signs and checks
// announcements with it.
func (g *Guard) Source() *identity.Source { return g.src }

// Open decodes and authenticates an envelope taken off the bus: it must
// end with a MAC, name its sender's certificate (verified against the mesh
// CA, or carried in the envelope) and one of this sidecar's identities as
// its receiver, have a MAC that verifies with their pair key, a timestamp
// within the skew, and not have been opened before. The Envelope aliases
// data. Errors are for Reason.
func (g *Guard) Open(data []byte) (envelope.Envelope, Sender, error) {
	msg, mac, ok := identity.SplitMAC(data)
	if !ok {
		return envelope.Envelope{}, Sender{}, ErrUnauthenticated
	}
	var env envelope.Envelope
	var sealed []byte
	var err error
	if isSealed(msg) {
		sealed, env.Cred, err = openSealed(msg)
	} else {
		env, err = envelope.Open(msg)
	}
	if err != nil {
		return env, Sender{}, err
	}
	c := &env.Cred
	keyID, ok := identity.KeyIDFromBytes(c.KeyID)
	peerID, ok2 := identity.KeyIDFromBytes(c.PeerKeyID)
	if !ok || !ok2 {
		return env, Sender{}, ErrUnauthenticated
	}
	local, err := g.src.Local(peerID)
	if err != nil {
		return env, Sender{}, fmt.Errorf("%w: %w", ErrNotAddressed, err)
	}
	peer, err := local.Verifier().Resolve(keyID, c.Cert)
	if err != nil {
		return env, Sender{}, err
	}
	key, err := local.RecvKey(peer)
	if err != nil {
		return env, Sender{}, err
	}
	if err := identity.VerifyMAC(msg, mac, key); err != nil {
		return env, Sender{}, err
	}
	if sealed != nil {
		plain, err := key.Unseal(nil, sealed[1:])
		if err != nil {
			return env, Sender{}, err
		}
		env.Kind, env.Msg = envelope.Kind(sealed[0]), plain
		if env.Kind < envelope.KindRequest || env.Kind > envelope.KindFrame {
			return env, Sender{}, fmt.Errorf("%w: sealed %s", envelope.ErrMalformed, env.Kind)
		}
	}
	id, _ := envelope.PeekID(env.Msg)
	if err := g.replay.Check(keyID, id, c.Timestamp); err != nil {
		return env, Sender{}, err
	}
	c.MAC = mac
	return env, Sender{Peer: peer, Local: local, Sealed: sealed != nil}, nil
}

// Bind seals what this sidecar sends to subject for from: the subject
// where a verified sender takes the rest of a call. It is sealed with the
// current identity; if from addressed a rotated-out one, with the current
// certificate too, so that the peer learns it (Learn). The binding is
// from's service's: another service naming the same subject gets one of
// its own, which envelopes answering from's calls never use (ForPeer).
func (g *Guard) Bind(subject string, from Sender) {
	if subject == "" || from.Peer == nil {
		return
	}
	local := g.src.Current()
	b := binding{local: local, peer: from.Peer, cert: from.Local != local, seal: from.Sealed}
	service := from.Peer.Service()
	for {
		v, loaded := g.bound.Load(subject)
		if !loaded {
			if _, raced := g.bound.LoadOrStore(subject, &bindings{by: []serviceBinding{{service, b}}}); !raced {
				return
			}
			continue
		}
		old := v.(*bindings)
		if cur, ok := old.find(service); ok && cur == b {
			return
		}
		next := old.with(service, b)
		if next == nil {
			g.logger.Warn("reply subject named by too many services: not bound", "subject", subject, telemetry.KeyService, service)
			return
		}
		if g.bound.CompareAndSwap(subject, v, next) {
			return
		}
	}
}

// Learn takes a newer certificate of service that a verified answer
// carried (its adapter rotated) as the one to seal requests for.
func (g *Guard) Learn(service string, peer *identity.Peer) {
	v, ok := g.certs.Load(service)
	if !ok {
		return
	}
	sc := v.(*serviceCert)
	f := sc.cur.Load()
	if f != nil && (f.peer == peer || !peer.Cert().NotAfter.After(f.peer.Cert().NotAfter)) {
		return
	}
	sc.cur.Store(&fetched{peer: peer, at: time.Now()})
	g.logger.Info("service certificate rotated", telemetry.KeyService, service, "key_id", peer.KeyID().String())
}

// Seal implements bus.Sealer: it appends the credential fields and the
// MAC for subject's receiver to b.
func (g *Guard) Seal(ctx context.Context, subject string, b []byte) ([]byte, error) {
	var local *identity.Identity
	var peer *identity.Peer
	var cert []byte
	seal := false
	if v, ok := g.bound.Load(subject); ok {
		bd, err := v.(*bindings).pick(ctx)
		if err != nil {
			return b, fmt.Errorf("seal for %s: %w", subject, err)
		}
		local, peer, seal = bd.local, bd.peer, bd.seal
		if bd.cert {
			cert = local.Cert().Raw
		}
	} else if service, ok := g.subjects.ServiceOf(subject); ok {
		seal = g.sealFor != nil && g.sealFor(service)
		var err error
		if peer, err = g.serviceCert(ctx, service); err != nil {
			return b, err
		}
		local = g.src.Current()
		cert = local.Cert().Raw // any instance of the service may take it
	} else {
		return b, fmt.Errorf("seal for %s: %w", subject, ErrNoReceiver)
	}
	if len(cert) > MaxCert {
		return b, fmt.Errorf("seal for %s: certificate of %d bytes, more than %d", subject, len(cert), MaxCert)
	}
	key, err := local.SendKey(peer)
	if err != nil {
		return b, fmt.Errorf("seal for %s: %w", subject, err)
	}
	if seal {
		if b, err = sealMessage(b, key); err != nil {
			return b, err
		}
	}
	from, to := key.Sender(), key.Receiver()
	b = envelope.AppendCredentials(b, from[:], to[:], g.stamp(), cert)
	return identity.AppendMAC(b, b, key), nil
}

// MaxCert bounds the certificate an envelope carries; busmesh's are about
// 500 bytes.
const MaxCert = 3 << 10

// Overhead implements bus.Sealer: the credential fields, a certificate of
// up to MaxCert bytes and the MAC.
func (g *Guard) Overhead() int {
	return 2*(2+len(identity.KeyID{})) + 9 + 3 + MaxCert + identity.MACOverhead + identity.SealOverhead + 1
}

// stamp is the timestamp of an envelope: now, or one nanosecond past the
// last one, so that no two envelopes this sidecar sends share one and the
// receiver's replay guard tells them apart.
func (g *Guard) stamp() int64 {
	now := time.Now().UnixNano()
	for {
		last := g.last.Load()
		ts := max(now, last+1)
		if g.last.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

// Close ends the Guard's subscriptions and waits for its goroutines.
func (g *Guard) Close() error {
	g.mu.Lock()
	subs := g.subs
	g.subs = nil
	g.mu.Unlock()
	var first error
	for _, s := range subs {
		if err := s.Unsubscribe(); err != nil && first == nil {
			first = err
		}
	}
	g.wg.Wait()
	return first
}
