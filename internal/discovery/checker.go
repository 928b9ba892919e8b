package discovery

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
	"github.com/busmesh/busmesh/internal/telemetry"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// maxChainGap bounds how far a heartbeat's seq may run ahead of the last
// one accepted from its sender and still be taken on its chain token; a
// larger gap (messages lost, or answers sent to others) is checked by its
// signature.
const maxChainGap = 16

// maxTrusted bounds the senders whose last checked announcement a checker
// keeps. Only announcements whose signature verified add to it.
const maxTrusted = 1 << 16

// checker checks the credentials of the announcements a sidecar with an
// identity takes (Signer makes them): the certificate chains to the mesh
// CA and names the announced service, the timestamp is fresh and the
// signature verifies; or the announcement is a heartbeat that repeats the
// claim of one whose signature verified, and its chain token hashes
// forward to that one's. What fails is counted and logged, rate-limited.
// A nil checker (no identity) takes everything. Safe for concurrent use.
type checker struct {
	src      *identity.Source
	skew     time.Duration
	rejected rejections
	logger   *slog.Logger
	limiter  telemetry.Limiter

	mu      sync.Mutex
	trusted map[claimant]*trusted
}

// claimant is who speaks about an instance.
type claimant struct{ service, instance, sidecar, incarnation string }

// trusted is the last announcement accepted from a claimant: its claim
// (the announcement whose signature verified, see claimOf), certificate,
// seq and chain token.
type trusted struct {
	claim    *busmeshv1.Announcement
	cert     []byte // DER, shared with the Verifier's peer
	key      identity.KeyID
	notAfter time.Time
	seq      uint64
	token    [sha256.Size]byte
}

// newChecker returns a checker for src's mesh, nil if src is nil.
func newChecker(src *identity.Source, rejected rejections, logger *slog.Logger) *checker {
	if src == nil {
		return nil
	}
	return &checker{src: src, skew: identity.DefaultSkew, rejected: rejected, logger: telemetry.OrDiscard(logger),
		limiter: telemetry.Limiter{Interval: time.Second}, trusted: map[claimant]*trusted{}}
}

// check reports whether a, decoded from data, may be believed; a
// rejection is counted and logged.
func (c *checker) check(data []byte, a *busmeshv1.Announcement) bool {
	if c == nil {
		return true
	}
	reason := c.verify(data, a, time.Now())
	if reason == "" {
		return true
	}
	c.rejected.count(reason)
	if ok, suppressed := c.limiter.Allow(); ok {
		c.logger.Warn("announcement rejected", "reason", reason, telemetry.KeyService, a.Service,
			telemetry.KeyInstance, a.Instance, "sidecar", a.Sidecar, "suppressed", suppressed)
	}
	return false
}

// verify returns why a cannot be believed, "" if it can.
func (c *checker) verify(data []byte, a *busmeshv1.Announcement, now time.Time) string {
	if (len(a.Certificate) == 0 && len(a.KeyId) == 0) || len(a.Signature) == 0 {
		return "unauthenticated"
	}
	who := claimant{a.Service, a.Instance, a.Sidecar, a.Incarnation}
	if c.chained(who, a, now) {
		return ""
	}
	msg, sig, ok := splitSignature(data)
	if !ok {
		return "unauthenticated"
	}
	peer, err := c.peer(a)
	if err != nil {
		return identity.Reason(err)
	}
	if err := peer.VerifyBroadcast(msg, sig); err != nil {
		return identity.Reason(err)
	}
	if peer.Service() != a.Service {
		return "wrong-service"
	}
	if t := time.Unix(0, a.TimestampUnixNano); t.Before(now.Add(-c.skew)) || t.After(now.Add(c.skew)) {
		return "stale"
	}
	c.remember(who, a, peer)
	return ""
}

// peer is the verified sender of a: by the certificate it carries, or by
// the fingerprint of one verified before (ErrUnknownKey if none was: the
// sender's next message with its certificate, at most certEvery
// heartbeats later, or its answer to a ping, will be).
func (c *checker) peer(a *busmeshv1.Announcement) (*identity.Peer, error) {
	v := c.src.Current().Verifier()
	if len(a.Certificate) != 0 {
		return v.VerifyPeer(a.Certificate)
	}
	id, ok := identity.KeyIDFromBytes(a.KeyId)
	if !ok {
		return nil, fmt.Errorf("announcement key id of %d bytes: %w", len(a.KeyId), identity.ErrMalformed)
	}
	return v.Peer(id)
}

// chained reports whether a heartbeat repeats the claim last accepted
// from who, under the same certificate, still valid, with a later seq
// whose chain token hashes to the one accepted: only who knows the tokens
// before it sends them, so it sent a's seq. The readings (in flight, p50)
// are not covered; they are shown, never used to route.
func (c *checker) chained(who claimant, a *busmeshv1.Announcement, now time.Time) bool {
	if a.Kind != busmeshv1.Announcement_KIND_HELLO || len(a.Chain) != sha256.Size {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.trusted[who]
	if t == nil || a.Seq <= t.seq || a.Seq-t.seq > maxChainGap || now.Add(-c.skew).After(t.notAfter) ||
		!sameClaim(t.claim, a) {
		return false
	}
	if len(a.Certificate) != 0 && !bytes.Equal(a.Certificate, t.cert) || len(a.Certificate) == 0 && string(a.KeyId) != string(t.key[:]) {
		return false // another certificate
	}
	h := [sha256.Size]byte(a.Chain)
	for range a.Seq - t.seq {
		h = sha256.Sum256(h[:])
	}
	if h != t.token {
		return false
	}
	t.seq, t.token = a.Seq, [sha256.Size]byte(a.Chain)
	return true
}

// sameClaim reports whether b claims what a did: everything but the
// readings, the seq and the credentials.
func sameClaim(a, b *busmeshv1.Announcement) bool {
	return a.Kind == b.Kind && a.Healthy == b.Healthy && a.Version == b.Version && a.Zone == b.Zone &&
		a.Concurrency == b.Concurrency && a.IntervalMs == b.IntervalMs && maps.Equal(a.Labels, b.Labels)
}

// claimOf copies what sameClaim compares.
func claimOf(a *busmeshv1.Announcement) *busmeshv1.Announcement {
	return &busmeshv1.Announcement{Kind: a.Kind, Healthy: a.Healthy, Version: a.Version, Zone: a.Zone,
		Concurrency: a.Concurrency, IntervalMs: a.IntervalMs, Labels: maps.Clone(a.Labels)}
}

// remember keeps a, whose signature peer's key verified, as who's last
// word: a goodbye forgets who. It keeps the peer's DER, which the
// instances of a service share, not a's copy.
func (c *checker) remember(who claimant, a *busmeshv1.Announcement, peer *identity.Peer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a.Kind == busmeshv1.Announcement_KIND_GOODBYE {
		delete(c.trusted, who)
		return
	}
	if a.Kind != busmeshv1.Announcement_KIND_HELLO || len(a.Chain) != sha256.Size {
		return
	}
	t := c.trusted[who]
	if t == nil {
		if len(c.trusted) >= maxTrusted {
			for k := range c.trusted { // any one: they are all signed
				delete(c.trusted, k)
				break
			}
		}
		t = &trusted{}
		c.trusted[who] = t
	}
	if t.claim == nil || !sameClaim(t.claim, a) {
		t.claim = claimOf(a)
	}
	t.cert, t.key = peer.Cert().Raw, peer.KeyID()
	t.notAfter, t.seq, t.token = peer.Cert().NotAfter, a.Seq, [sha256.Size]byte(a.Chain)
}
