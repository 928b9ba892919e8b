package hostile

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// meshCA is a mesh's CA in a temporary directory, issuing the
// certificates of secure meshes.
type meshCA struct {
	dir   string
	ca    *identity.CA
	files map[string][2]string // by service: the instances of a service share one certificate
}

// secure gives the mesh a CA: the sidecars started from now on load
// identities of their services (the caller's is "web").
func (m *mesh) secure() {
	m.t.Helper()
	ca, err := identity.NewCA(m.name, 24*time.Hour, time.Now())
	if err != nil {
		m.t.Fatal(err)
	}
	dir := m.t.TempDir()
	if err := ca.WriteFiles(dir); err != nil {
		m.t.Fatal(err)
	}
	m.ca = &meshCA{dir: dir, ca: ca, files: map[string][2]string{}}
}

// identity is the config section of service's identity, "" when the mesh
// is not secure.
func (m *mesh) identity(service string) string {
	if m.ca == nil {
		return ""
	}
	f, ok := m.ca.files[service]
	if !ok {
		f[0], f[1] = m.ca.issue(m.t, service)
		m.ca.files[service] = f
	}
	cert, key := f[0], f[1]
	return fmt.Sprintf("identity:\n  cert: %s\n  key: %s\n  ca: %s\n", cert, key, filepath.Join(m.ca.dir, identity.CACertFile))
}

// issue writes a certificate for service and returns its files.
func (c *meshCA) issue(t testing.TB, service string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := c.ca.Issue(service, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err = identity.WriteServiceFiles(t.TempDir(), service, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// source loads an identity of service from the mesh's CA.
func (c *meshCA) source(t testing.TB, service string) *identity.Source {
	t.Helper()
	cert, key := c.issue(t, service)
	src, err := identity.NewSource(identity.SourceConfig{CertFile: cert, KeyFile: key,
		CAFile: filepath.Join(c.dir, identity.CACertFile)})
	if err != nil {
		t.Fatal(err)
	}
	return src
}
