package testutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/busmesh/busmesh/internal/testutil"
)

// TestCA: a server certificate verifies against the CA's pool for its
// names only, a client certificate for client use, and written files load
// as a key pair.
func TestCA(t *testing.T) {
	ca := testutil.NewCA(t, "test CA")
	srv := ca.Server(t, "app.internal", "127.0.0.1")
	for name, ok := range map[string]bool{"app.internal": true, "127.0.0.1": true, "other.internal": false} {
		_, err := srv.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool()})
		if (err == nil) != ok {
			t.Errorf("server certificate for %s: %v, want verified %v", name, err, ok)
		}
	}
	if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: testutil.NewCA(t, "other").Pool()}); err == nil {
		t.Error("a certificate verified against another CA")
	}
	cli := ca.Client(t, "adapter")
	if _, err := cli.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	cert, key := ca.WriteFiles(t, cli, "adapter")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil || pair.Leaf.Subject.CommonName != "adapter" {
		t.Errorf("LoadX509KeyPair(%s, %s) = %v, %v", cert, key, pair.Leaf, err)
	}
}
