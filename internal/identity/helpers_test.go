package identity_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// testMesh is a mesh CA in a temporary directory.
type testMesh struct {
	dir string
	ca  *identity.CA
}

func newTestMesh(t testing.TB, name string) *testMesh {
	t.Helper()
	ca, err := identity.NewCA(name, 365*24*time.Hour, time.Now())
	if err != nil {
		t.Fatalf("NewCA(%q) = %v", name, err)
	}
	dir := t.TempDir()
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatalf("WriteFiles = %v", err)
	}
	return &testMesh{dir: dir, ca: ca}
}

func (m *testMesh) caFile() string { return filepath.Join(m.dir, identity.CACertFile) }

// issue writes a certificate for service into dir, valid from now for ttl.
func (m *testMesh) issue(t testing.TB, dir, service string, ttl time.Duration, now time.Time) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := m.ca.Issue(service, ttl, now)
	if err != nil {
		t.Fatalf("Issue(%q) = %v", service, err)
	}
	certFile, keyFile, err = identity.WriteServiceFiles(dir, service, certPEM, keyPEM)
	if err != nil {
		t.Fatalf("WriteServiceFiles = %v", err)
	}
	return certFile, keyFile
}

// identity issues a day-long certificate for service and loads it.
func (m *testMesh) identity(t testing.TB, service string) *identity.Identity {
	t.Helper()
	certFile, keyFile := m.issue(t, t.TempDir(), service, 24*time.Hour, time.Now())
	id, err := identity.Load(certFile, keyFile, m.caFile())
	if err != nil {
		t.Fatalf("Load(%s) = %v", service, err)
	}
	return id
}

// certDER issues a certificate for service valid from now for ttl and
// returns its DER.
func (m *testMesh) certDER(t testing.TB, service string, ttl time.Duration, now time.Time) []byte {
	t.Helper()
	certPEM, _, err := m.ca.Issue(service, ttl, now)
	if err != nil {
		t.Fatalf("Issue(%q) = %v", service, err)
	}
	block, _ := pem.Decode(certPEM)
	return block.Bytes
}

// caKey reads the CA's private key back from its file, to sign
// certificates Issue would not make.
func (m *testMesh) caKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.dir, identity.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(ed25519.PrivateKey)
}

// peer verifies id's certificate from the point of view of v.
func peer(t testing.TB, v *identity.Identity, id *identity.Identity) *identity.Peer {
	t.Helper()
	p, err := v.VerifyPeer(id.Cert().Raw)
	if err != nil {
		t.Fatalf("VerifyPeer(%s) = %v", id.Service(), err)
	}
	return p
}
