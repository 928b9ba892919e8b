package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// DefaultSkew is the clock difference allowed between sidecars, for
// certificate validity and for envelope timestamps.
const DefaultSkew = 30 * time.Second

// DefaultMaxPeers bounds the verified peers a Verifier keeps, and the pair
// keys an Identity keeps in each direction.
const DefaultMaxPeers = 4096

// Peer is a verified certificate of another sidecar (or of this one). It
// is immutable and safe to share.
type Peer struct {
	service  string
	keyID    KeyID
	cert     *x509.Certificate
	notAfter time.Time
	sign     ed25519.PublicKey
	kex      *ecdh.PublicKey
}

// Service is the service the peer's certificate names.
func (p *Peer) Service() string { return p.service }

// KeyID is the fingerprint of the peer's certificate.
func (p *Peer) KeyID() KeyID { return p.keyID }

// Cert is the peer's certificate. The caller must not modify it.
func (p *Peer) Cert() *x509.Certificate { return p.cert }

// expired reports whether the certificate ended more than skew before now.
func (p *Peer) expired(now time.Time, skew time.Duration) bool {
	return now.Add(-skew).After(p.notAfter)
}

// Verifier checks peer certificates against one mesh's CA and keeps those
// that pass, by fingerprint, so that checking a known certificate again
// costs a hash and a map lookup. It is safe for concurrent use.
type Verifier struct {
	ca    *x509.Certificate
	mesh  string
	roots *x509.CertPool
	skew  time.Duration
	peers *boundedCache[KeyID, *Peer]
}

// NewVerifier makes a Verifier for the mesh of CA certificate ca, allowing
// skew of clock difference (DefaultSkew if 0) and keeping at most maxPeers
// verified certificates (DefaultMaxPeers if 0).
func NewVerifier(ca *x509.Certificate, skew time.Duration, maxPeers int) (*Verifier, error) {
	if !ca.IsCA {
		return nil, fmt.Errorf("%w: %q is not a CA certificate", ErrMalformed, ca.Subject.CommonName)
	}
	mesh, _, err := names(ca)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if skew == 0 {
		skew = DefaultSkew
	}
	if maxPeers == 0 {
		maxPeers = DefaultMaxPeers
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &Verifier{ca: ca, mesh: mesh, roots: roots, skew: skew, peers: newBoundedCache[KeyID, *Peer](maxPeers)}, nil
}

// Mesh is the mesh whose certificates the Verifier accepts.
func (v *Verifier) Mesh() string { return v.mesh }

// VerifyPeer checks the DER certificate der: it must chain to the mesh CA,
// be valid now (give or take the skew), name this mesh and a service, and
// carry a key-agreement key. A certificate verified before is found by its
// fingerprint without being parsed again. Errors wrap ErrMalformed,
// ErrWrongMesh, ErrUnknownCA or ErrExpired. der is not kept; the Peer may
// be shared with other callers.
func (v *Verifier) VerifyPeer(der []byte) (*Peer, error) {
	return v.verifyPeerAt(der, time.Now())
}

func (v *Verifier) verifyPeerAt(der []byte, now time.Time) (*Peer, error) {
	id := KeyIDOf(der)
	if p, err := v.lookup(id, now); !errors.Is(err, ErrUnknownKey) {
		return p, err
	}
	p, err := v.verify(der, id, now)
	if err != nil {
		return nil, err
	}
	return v.peers.add(id, p), nil
}

// Peer returns the verified peer whose certificate has fingerprint id:
// ErrUnknownKey if it was not verified here (or was evicted; VerifyPeer
// brings it back), ErrExpired if it has expired since.
func (v *Verifier) Peer(id KeyID) (*Peer, error) { return v.lookup(id, time.Now()) }

// Resolve finds the sender of an envelope that names its certificate by
// id and may carry it (cert, the envelope's certificate field, nil when
// absent): a peer verified before costs a map lookup; otherwise cert is
// verified and must have fingerprint id. Errors are those of Peer and
// VerifyPeer.
func (v *Verifier) Resolve(id KeyID, cert []byte) (*Peer, error) {
	now := time.Now()
	p, err := v.lookup(id, now)
	if !errors.Is(err, ErrUnknownKey) || cert == nil {
		return p, err
	}
	if KeyIDOf(cert) != id {
		return nil, fmt.Errorf("%w: certificate %s sent with key id %s", ErrUnknownKey, KeyIDOf(cert), id)
	}
	return v.verifyPeerAt(cert, now)
}

func (v *Verifier) lookup(id KeyID, now time.Time) (*Peer, error) {
	p, ok := v.peers.get(id)
	if !ok {
		return nil, fmt.Errorf("peer %s: %w", id, ErrUnknownKey)
	}
	if p.expired(now, v.skew) {
		v.peers.remove(id)
		return nil, fmt.Errorf("peer %s (%s): %w on %s", p.service, id, ErrExpired, p.notAfter.UTC().Format(time.RFC3339))
	}
	return p, nil
}

// verify does the full check of a certificate not seen before.
func (v *Verifier) verify(der []byte, id KeyID, now time.Time) (*Peer, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if c.IsCA {
		return nil, fmt.Errorf("%w: a CA certificate is no peer", ErrMalformed)
	}
	mesh, service, err := names(c)
	if err != nil {
		return nil, err
	}
	if mesh != v.mesh {
		return nil, fmt.Errorf("%s of mesh %q, want %q: %w", service, mesh, v.mesh, ErrWrongMesh)
	}
	if now.Add(v.skew).Before(c.NotBefore) || now.Add(-v.skew).After(c.NotAfter) {
		return nil, fmt.Errorf("%s: %w: valid %s to %s", service, ErrExpired,
			c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
	}
	// Within the skew, check the chain at the nearest instant the
	// certificate is valid.
	at := now
	if at.Before(c.NotBefore) {
		at = c.NotBefore
	} else if at.After(c.NotAfter) {
		at = c.NotAfter
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: v.roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		var invalid x509.CertificateInvalidError
		var unknown x509.UnknownAuthorityError
		switch {
		case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
			return nil, fmt.Errorf("%s: %w: %w", service, ErrExpired, err)
		case errors.As(err, &unknown):
			return nil, fmt.Errorf("%s: %w: %w", service, ErrUnknownCA, err)
		default:
			return nil, fmt.Errorf("%s: %w: %w", service, ErrMalformed, err)
		}
	}
	sign, ok := c.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: %w: %T key, want Ed25519", service, ErrMalformed, c.PublicKey)
	}
	kex, err := keyAgreementKey(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", service, err)
	}
	return &Peer{service: service, keyID: id, cert: c, notAfter: c.NotAfter, sign: sign, kex: kex}, nil
}
