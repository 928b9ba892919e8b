package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// File names of a mesh CA in its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// backdate is how far before "now" certificates start, so that a peer whose
// clock is a little behind accepts a certificate issued a moment ago.
const backdate = time.Minute

// CA is a mesh's certificate authority: an Ed25519 key and a self-signed CA
// certificate naming the mesh. It is immutable and safe for concurrent use.
type CA struct {
	cert *x509.Certificate
	key  ed25519.PrivateKey
	mesh string
}

// NewCA creates the CA of mesh, valid from now for ttl. mesh must be a
// subject token (letters, digits, '-', '_'), since it names subjects too.
func NewCA(mesh string, ttl time.Duration, now time.Time) (*CA, error) {
	if err := broker.ValidToken(mesh); err != nil {
		return nil, fmt.Errorf("mesh name: %w", err)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("CA ttl %v: want a positive duration", ttl)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, fmt.Errorf("CA serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "busmesh " + mesh + " CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{serviceURI(mesh, "")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key, mesh: mesh}, nil
}

// LoadCA reads a CA written by WriteFiles.
func LoadCA(certFile, keyFile string) (*CA, error) {
	cert, err := readCert(certFile)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", certFile)
	}
	mesh, _, err := names(cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	keys, err := parseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if keys.sign == nil {
		return nil, fmt.Errorf("%s: %w: no Ed25519 key", keyFile, ErrMalformed)
	}
	if pub, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(keys.sign.Public()) {
		return nil, fmt.Errorf("%s does not hold the key of %s", keyFile, certFile)
	}
	return &CA{cert: cert, key: keys.sign, mesh: mesh}, nil
}

// Cert is the CA certificate. The caller must not modify it.
func (ca *CA) Cert() *x509.Certificate { return ca.cert }

// Mesh is the mesh the CA names.
func (ca *CA) Mesh() string { return ca.mesh }

// WriteFiles writes the CA into dir as CACertFile and CAKeyFile (mode 0600),
// creating dir if needed. It refuses to overwrite an existing CA key:
// replacing a CA invalidates every certificate of the mesh.
func (ca *CA) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create CA directory: %w", err)
	}
	keyPEM, err := encodeKeys(ca.key, nil)
	if err != nil {
		return err
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: a new CA would invalidate every certificate of its mesh; remove it first if that is meant", keyPath)
		}
		return fmt.Errorf("write CA key: %w", err)
	}
	_, err = f.Write(keyPEM)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write CA key: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, CACertFile), encodeCert(ca.cert.Raw), 0o644)
}

// Issue makes a service certificate for service, valid from now for ttl
// and no longer than the CA, with fresh Ed25519 and X25519 keys. It returns
// the certificate and both private keys, PEM encoded; WriteServiceFiles
// stores them.
func (ca *CA) Issue(service string, ttl time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	if err := broker.ValidToken(service); err != nil {
		return nil, nil, fmt.Errorf("service name: %w", err)
	}
	if ttl <= 0 {
		return nil, nil, fmt.Errorf("ttl %v: want a positive duration", ttl)
	}
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		return nil, nil, fmt.Errorf("ttl %v: the certificate would outlive the CA (valid until %s)", ttl, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	pub, sign, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate signing key: %w", err)
	}
	kex, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key-agreement key: %w", err)
	}
	kexDER, err := x509.MarshalPKIXPublicKey(kex.PublicKey())
	if err != nil {
		return nil, nil, fmt.Errorf("encode key-agreement key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, nil, fmt.Errorf("serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: service},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{serviceURI(ca.mesh, service)},
		ExtraExtensions:       []pkix.Extension{{Id: OIDKeyAgreement, Value: kexDER}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate for %s: %w", service, err)
	}
	keyPEM, err = encodeKeys(sign, kex)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// WriteServiceFiles writes an issued certificate and key into dir as
// SERVICE.crt and SERVICE.key (mode 0600), each replaced atomically so
// that a Source watching them never reads half a file. The key is written
// first: a Source that sees the new key with the old certificate waits for
// both to settle.
func WriteServiceFiles(dir, service string, certPEM, keyPEM []byte) (certFile, keyFile string, err error) {
	if err := broker.ValidToken(service); err != nil {
		return "", "", fmt.Errorf("service name: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("create output directory: %w", err)
	}
	certFile = filepath.Join(dir, service+".crt")
	keyFile = filepath.Join(dir, service+".key")
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}
