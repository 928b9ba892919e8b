package identity_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// FuzzVerifyMAC feeds arbitrary bytes to SplitMAC and VerifyMAC, as the
// adapter does with what comes off the broker: they must not panic, and
// only what AppendMAC made may verify.
func FuzzVerifyMAC(f *testing.F) {
	p := newPair(f)
	send, recv := p.keys(f)
	env := testEnvelope(20)
	f.Add(identity.AppendMAC(append([]byte(nil), env...), env, send))
	f.Add(env)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, mac, ok := identity.SplitMAC(b)
		if !ok {
			if mac != nil || !bytes.Equal(msg, b) {
				t.Fatalf("SplitMAC() = %x, %x, false; want the input and no MAC", msg, mac)
			}
			return
		}
		if len(msg)+identity.MACOverhead != len(b) || len(mac) != identity.MACSize {
			t.Fatalf("SplitMAC() split %d bytes into %d and %d", len(b), len(msg), len(mac))
		}
		err := identity.VerifyMAC(msg, mac, recv)
		want := identity.AppendMAC(append([]byte(nil), msg...), msg, send)
		if genuine := bytes.Equal(want, b); genuine != (err == nil) {
			t.Fatalf("VerifyMAC() = %v for input made by AppendMAC: %v", err, genuine)
		}
		if err != nil && !errors.Is(err, identity.ErrBadMAC) {
			t.Fatalf("VerifyMAC() = %v, want ErrBadMAC", err)
		}
	})
}

// FuzzLoadCert feeds arbitrary bytes to the certificate parser and to peer
// verification, PEM or DER, and as the certificate of an identity: none
// may panic, every error must carry a reason, and nothing may verify that
// the mesh CA did not issue.
func FuzzLoadCert(f *testing.F) {
	m := newTestMesh(f, "prod")
	self := m.identity(f, "web")
	dir := f.TempDir()
	certFile, keyFile := m.issue(f, dir, "orders", 24*time.Hour, time.Now())
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	caPEM, _ := os.ReadFile(m.caFile())
	f.Add(certPEM)
	f.Add(self.Cert().Raw)
	f.Add(caPEM)
	f.Add(keyPEM)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := identity.ParseCert(b)
		if err != nil {
			if !errors.Is(err, identity.ErrMalformed) {
				t.Fatalf("ParseCert() = %v, want ErrMalformed", err)
			}
		} else {
			identity.Describe(c)
		}
		p, err := self.VerifyPeer(b)
		if err != nil {
			if identity.Reason(err) == "other" {
				t.Fatalf("VerifyPeer() = %v, which has no reason", err)
			}
		} else if p.Service() == "" {
			t.Fatal("VerifyPeer() accepted a certificate without a service")
		}
		if id, err := identity.New(b, keyPEM, caPEM, nil); err == nil && id.Service() != "orders" {
			t.Fatalf("New() = %s from fuzzed bytes", id.Service())
		}
	})
}
