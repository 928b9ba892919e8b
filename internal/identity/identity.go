package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"os"
	"time"
)

// Identity is one service identity as loaded from its files: certificate,
// signing key, key-agreement key, and the mesh CA that verifies peers. It
// is immutable apart from its caches and safe for concurrent use; a
// rotation makes a new Identity (Source) rather than changing one.
type Identity struct {
	cert    *x509.Certificate
	keyID   KeyID
	service string
	sign    ed25519.PrivateKey
	kex     *ecdh.PrivateKey
	peers   *Verifier

	// Pair keys by the peer's KeyID, one cache per direction: the key for
	// sending to a peer differs from the key for receiving from it.
	send, recv *boundedCache[KeyID, *PairKey]
}

// Load reads a service identity: certFile (PEM, from `busmesh ca issue`),
// keyFile (the PEM file holding its Ed25519 and X25519 private keys) and
// caFile (the mesh CA certificate). The certificate must be valid now,
// chain to the CA and match both keys.
func Load(certFile, keyFile, caFile string) (*Identity, error) {
	files, err := readFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	return New(files[0], files[1], files[2], nil)
}

// New is Load from the files' contents. verifier, if not nil and for the
// same CA, is used for peers instead of a new one, so that peers verified
// before a rotation stay verified (Source passes the previous identity's);
// the new Identity shares it.
func New(certPEM, keyPEM, caPEM []byte, verifier *Verifier) (*Identity, error) {
	ca, err := ParseCert(caPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if verifier == nil || !verifier.ca.Equal(ca) {
		if verifier, err = NewVerifier(ca, 0, 0); err != nil {
			return nil, err
		}
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	self, err := verifier.verify(cert.Raw, KeyIDOf(cert.Raw), time.Now())
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	k, err := parseKeys(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if k.sign == nil || k.kex == nil {
		return nil, fmt.Errorf("key: %w: want an Ed25519 and an X25519 private key", ErrMalformed)
	}
	if !self.sign.Equal(k.sign.Public()) {
		return nil, fmt.Errorf("key: the Ed25519 key is not the certificate's (%s)", self.keyID)
	}
	if !self.kex.Equal(k.kex.PublicKey()) {
		return nil, fmt.Errorf("key: the X25519 key is not the certificate's (%s)", self.keyID)
	}
	return &Identity{
		cert:    cert,
		keyID:   self.keyID,
		service: self.service,
		sign:    k.sign,
		kex:     k.kex,
		peers:   verifier,
		send:    newBoundedCache[KeyID, *PairKey](DefaultMaxPeers),
		recv:    newBoundedCache[KeyID, *PairKey](DefaultMaxPeers),
	}, nil
}

func readFiles(names ...string) ([][]byte, error) {
	out := make([][]byte, len(names))
	for i, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("load identity: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

// KeyID is the fingerprint of this identity's certificate: what envelopes
// carry as the sender's (or receiver's) key id.
func (id *Identity) KeyID() KeyID { return id.keyID }

// Service is the service this identity speaks for.
func (id *Identity) Service() string { return id.service }

// Mesh is the mesh this identity belongs to.
func (id *Identity) Mesh() string { return id.peers.mesh }

// Cert is the identity's certificate; Cert().Raw is what announcements
// carry so that peers can VerifyPeer it. The caller must not modify it.
func (id *Identity) Cert() *x509.Certificate { return id.cert }

// Verifier checks peers against this identity's mesh CA.
func (id *Identity) Verifier() *Verifier { return id.peers }

// VerifyPeer is id.Verifier().VerifyPeer.
func (id *Identity) VerifyPeer(der []byte) (*Peer, error) { return id.peers.VerifyPeer(der) }
