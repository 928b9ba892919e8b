package testutil

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// MeshCA is a mesh's identity CA for a test (package identity: the
// certificates sidecars sign and seal envelopes with), its files in a
// directory of the test's.
type MeshCA struct {
	CA  *identity.CA
	Dir string
}

// NewMeshCA makes the CA of mesh, valid for a day from a minute ago.
func NewMeshCA(t testing.TB, mesh string) *MeshCA {
	t.Helper()
	ca, err := identity.NewCA(mesh, 24*time.Hour, time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	return &MeshCA{CA: ca, Dir: dir}
}

// Source issues service a certificate valid for an hour, writes its files
// and returns the Source that follows them.
func (m *MeshCA) Source(t testing.TB, service string) *identity.Source {
	t.Helper()
	certPEM, keyPEM, err := m.CA.Issue(service, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := identity.WriteServiceFiles(filepath.Join(m.Dir, service), service, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewSource(identity.SourceConfig{CertFile: cert, KeyFile: key, CAFile: filepath.Join(m.Dir, identity.CACertFile)})
	if err != nil {
		t.Fatal(err)
	}
	return src
}
