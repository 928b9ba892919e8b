package discovery

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	_ "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/identity"
)

// sharedNATS requires the shared NATS server (BUSMESH_TEST_NATS, else
// 127.0.0.1:4222) and returns the test's context, ended within 30 s, and a
// function that opens a connection to it, closed when the test ends.
func sharedNATS(t *testing.T) (context.Context, func() broker.Broker) {
	t.Helper()
	addr := "127.0.0.1:4222"
	if v := os.Getenv("BUSMESH_TEST_NATS"); v != "" {
		addr = v
	}
	brokertest.Require(t, "nats", addr, "nats-server -p 4222")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx, func() broker.Broker {
		b, err := broker.Open(ctx, "nats://"+addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
}

// testCA is a mesh CA in a temporary directory, issuing identities for
// the tests of signed discovery.
type testCA struct {
	dir string
	ca  *identity.CA
}

func newTestCA(t testing.TB, mesh string) *testCA {
	t.Helper()
	ca, err := identity.NewCA(mesh, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ca.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	return &testCA{dir: dir, ca: ca}
}

// issue writes a fresh certificate for service into dir (a new directory
// when dir is "") and returns a Source following it.
func (c *testCA) issue(t testing.TB, service, dir string) (*identity.Source, string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	certPEM, keyPEM, err := c.ca.Issue(service, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := identity.WriteServiceFiles(dir, service, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	src, err := identity.NewSource(identity.SourceConfig{CertFile: certFile, KeyFile: keyFile,
		CAFile: filepath.Join(c.dir, identity.CACertFile)})
	if err != nil {
		t.Fatal(err)
	}
	return src, dir
}
