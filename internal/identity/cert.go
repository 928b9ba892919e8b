package identity

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// OIDKeyAgreement identifies the non-critical certificate extension that
// carries a service's X25519 key-agreement public key; its value is the
// key's DER SubjectPublicKeyInfo (what x509.MarshalPKIXPublicKey gives). The
// OID sits under the UUID arc 2.25 (ITU-T X.667), which needs no
// registration; its arc is a random number kept below 2^31 so that it
// parses where int has 32 bits. It must never change: certificates in the
// field carry it.
var OIDKeyAgreement = asn1.ObjectIdentifier{2, 25, 1540820978, 1}

// URIScheme is the scheme of the URI SAN that names a certificate's mesh
// and service: busmesh://<mesh>/<service> for a service, busmesh://<mesh>
// for the mesh CA.
const URIScheme = "busmesh"

// KeyID is the SHA-256 fingerprint of a certificate's DER. Envelopes name
// their sender's and receiver's certificates by it. It is a value; copies
// are independent.
type KeyID [sha256.Size]byte

// KeyIDOf is the KeyID of the certificate whose DER is der.
func KeyIDOf(der []byte) KeyID { return sha256.Sum256(der) }

// KeyIDFromBytes reads a KeyID carried in an envelope field; ok is false
// unless b is exactly 32 bytes. It does not keep b.
func KeyIDFromBytes(b []byte) (id KeyID, ok bool) {
	if len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// String is "sha256:" and the lower-case hex of the fingerprint.
func (k KeyID) String() string { return "sha256:" + hex.EncodeToString(k[:]) }

// ParseCert parses one certificate, PEM ("CERTIFICATE" block) or DER. It
// checks the form only, not the chain or the validity period; errors wrap
// ErrMalformed. It does not keep data.
func ParseCert(data []byte) (*x509.Certificate, error) {
	der := data
	if block, rest := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE", ErrMalformed, block.Type)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, fmt.Errorf("%w: more than one PEM block", ErrMalformed)
		}
		der = block.Bytes
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return c, nil
}

// CertInfo describes a busmesh certificate, for display.
type CertInfo struct {
	// Service is the service the certificate names; empty for the mesh CA.
	Service string
	// Mesh is the mesh the certificate names; empty if it names none.
	Mesh string
	// CA is true for a CA certificate.
	CA bool
	// Serial is the serial number in lower-case hex.
	Serial string
	// KeyID is the certificate's fingerprint.
	KeyID KeyID
	// NotBefore and NotAfter bound the validity period.
	NotBefore, NotAfter time.Time
	// KeyAgreement is true if the certificate carries a valid X25519
	// key-agreement key.
	KeyAgreement bool
}

// Describe reports what c says about itself, without checking it. Names it
// cannot read are left empty.
func Describe(c *x509.Certificate) CertInfo {
	mesh, service, _ := names(c)
	_, kexErr := keyAgreementKey(c)
	return CertInfo{
		Service:      service,
		Mesh:         mesh,
		CA:           c.IsCA,
		Serial:       hex.EncodeToString(c.SerialNumber.Bytes()),
		KeyID:        KeyIDOf(c.Raw),
		NotBefore:    c.NotBefore,
		NotAfter:     c.NotAfter,
		KeyAgreement: kexErr == nil,
	}
}

// names reads mesh and service from c's one busmesh URI SAN; service is
// empty for a CA. A service certificate's CN must equal its service.
func names(c *x509.Certificate) (mesh, service string, err error) {
	var u *url.URL
	for _, cand := range c.URIs {
		if cand.Scheme != URIScheme {
			continue
		}
		if u != nil {
			return "", "", fmt.Errorf("%w: more than one %s URI", ErrMalformed, URIScheme)
		}
		u = cand
	}
	if u == nil {
		return "", "", fmt.Errorf("%w: no %s:// URI naming the mesh", ErrMalformed, URIScheme)
	}
	mesh = u.Host
	if err := broker.ValidToken(mesh); err != nil {
		return "", "", fmt.Errorf("%w: mesh name: %w", ErrMalformed, err)
	}
	service = strings.TrimPrefix(u.EscapedPath(), "/")
	if c.IsCA {
		if service != "" {
			return "", "", fmt.Errorf("%w: CA URI %q names a service", ErrMalformed, u)
		}
		return mesh, "", nil
	}
	if err := broker.ValidToken(service); err != nil {
		return "", "", fmt.Errorf("%w: service name in %q: %w", ErrMalformed, u, err)
	}
	if c.Subject.CommonName != service {
		return "", "", fmt.Errorf("%w: common name %q differs from service %q", ErrMalformed, c.Subject.CommonName, service)
	}
	return mesh, service, nil
}

// keyAgreementKey reads the X25519 key from c's OIDKeyAgreement extension.
func keyAgreementKey(c *x509.Certificate) (*ecdh.PublicKey, error) {
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(OIDKeyAgreement) {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(ext.Value)
		if err != nil {
			return nil, fmt.Errorf("%w: key-agreement extension: %w", ErrMalformed, err)
		}
		k, ok := pub.(*ecdh.PublicKey)
		if !ok || k.Curve() != ecdh.X25519() {
			return nil, fmt.Errorf("%w: key-agreement key is %T, want X25519", ErrMalformed, pub)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%w: no key-agreement key (extension %s)", ErrMalformed, OIDKeyAgreement)
}

// serviceURI is the URI SAN of service in mesh; service is empty for the
// CA.
func serviceURI(mesh, service string) *url.URL {
	u := &url.URL{Scheme: URIScheme, Host: mesh}
	if service != "" {
		u.Path = "/" + service
	}
	return u
}

// serialLimit bounds random serial numbers to 128 bits.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)
