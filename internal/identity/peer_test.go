package identity_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

func TestVerifyPeer(t *testing.T) {
	prod := newTestMesh(t, "prod")
	forged := newTestMesh(t, "prod") // same mesh name, another CA
	staging := newTestMesh(t, "staging")
	self := prod.identity(t, "web")
	now := time.Now()
	day := 24 * time.Hour

	noKex := func() []byte {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "orders"},
			NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
			URIs: []*url.URL{{Scheme: "busmesh", Host: "prod", Path: "/orders"}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, prod.ca.Cert(), pub, prod.caKey(t))
		if err != nil {
			t.Fatal(err)
		}
		return der
	}()
	good := prod.certDER(t, "orders", day, now)
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-10] ^= 1 // in the CA's signature

	tests := []struct {
		name    string
		der     []byte
		wantErr error
	}{
		{"valid", good, nil},
		{"expired within skew", prod.certDER(t, "orders", day, now.Add(-day-10*time.Second)), nil},
		{"another CA", forged.certDER(t, "orders", day, now), identity.ErrUnknownCA},
		{"tampered signature", tampered, identity.ErrUnknownCA},
		{"another mesh", staging.certDER(t, "orders", day, now), identity.ErrWrongMesh},
		{"expired", prod.certDER(t, "orders", day, now.Add(-day-2*time.Minute)), identity.ErrExpired},
		{"not yet valid", prod.certDER(t, "orders", day, now.Add(time.Hour)), identity.ErrExpired},
		{"garbage", []byte("not a certificate"), identity.ErrMalformed},
		{"empty", nil, identity.ErrMalformed},
		{"truncated", good[:len(good)/2], identity.ErrMalformed},
		{"CA certificate", prod.ca.Cert().Raw, identity.ErrMalformed},
		{"no key-agreement key", noKex, identity.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := self.VerifyPeer(tt.der)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("VerifyPeer() = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if got, want := identity.Reason(err), identity.Reason(tt.wantErr); got != want {
					t.Errorf("Reason(%v) = %q, want %q", err, got, want)
				}
				return
			}
			if p.Service() != "orders" {
				t.Errorf("Service() = %q, want orders", p.Service())
			}
			if p.KeyID() != identity.KeyIDOf(tt.der) {
				t.Errorf("KeyID() = %s, want the fingerprint", p.KeyID())
			}
			again, err := self.VerifyPeer(tt.der)
			if err != nil || again != p {
				t.Errorf("second VerifyPeer() = %p, %v; want the cached %p", again, err, p)
			}
			byID, err := self.Verifier().Peer(p.KeyID())
			if err != nil || byID != p {
				t.Errorf("Peer(KeyID) = %p, %v; want %p", byID, err, p)
			}
		})
	}
}

func TestPeerUnknownKeyID(t *testing.T) {
	self := newTestMesh(t, "prod").identity(t, "web")
	_, err := self.Verifier().Peer(identity.KeyID{1})
	if !errors.Is(err, identity.ErrUnknownKey) {
		t.Fatalf("Peer(unknown) = %v, want ErrUnknownKey", err)
	}
}

func TestVerifierCacheIsBounded(t *testing.T) {
	m := newTestMesh(t, "prod")
	v, err := identity.NewVerifier(m.ca.Cert(), 0, 4)
	if err != nil {
		t.Fatal(err)
	}
	var ids []identity.KeyID
	for range 10 {
		p, err := v.VerifyPeer(m.certDER(t, "orders", time.Hour, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.KeyID())
	}
	known := 0
	for _, id := range ids {
		if _, err := v.Peer(id); err == nil {
			known++
		}
	}
	if known != 4 {
		t.Errorf("after 10 peers in a cache of 4, %d are known, want 4", known)
	}
	if _, err := v.Peer(ids[len(ids)-1]); err != nil {
		t.Errorf("the last peer added was evicted: %v", err)
	}
}

func TestLoad(t *testing.T) {
	prod := newTestMesh(t, "prod")
	staging := newTestMesh(t, "staging")
	dir := t.TempDir()
	certFile, keyFile := prod.issue(t, dir, "orders", time.Hour, time.Now())
	otherCert, otherKey := prod.issue(t, t.TempDir(), "orders", time.Hour, time.Now())
	expiredCert, expiredKey := prod.issue(t, t.TempDir(), "orders", time.Hour, time.Now().Add(-2*time.Hour))

	tests := []struct {
		name          string
		cert, key, ca string
		wantErr       error // nil: any error
		wantOK        bool
	}{
		{name: "valid", cert: certFile, key: keyFile, ca: prod.caFile(), wantOK: true},
		{name: "key of another certificate", cert: certFile, key: otherKey, ca: prod.caFile()},
		{name: "CA of another mesh", cert: certFile, key: keyFile, ca: staging.caFile(), wantErr: identity.ErrWrongMesh},
		{name: "expired", cert: expiredCert, key: expiredKey, ca: prod.caFile(), wantErr: identity.ErrExpired},
		{name: "key file as certificate", cert: keyFile, key: keyFile, ca: prod.caFile(), wantErr: identity.ErrMalformed},
		{name: "missing file", cert: otherCert + ".missing", key: otherKey, ca: prod.caFile()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := identity.Load(tt.cert, tt.key, tt.ca)
			if tt.wantOK {
				if err != nil {
					t.Fatalf("Load() = %v", err)
				}
				if id.Service() != "orders" || id.Mesh() != "prod" {
					t.Errorf("Load() = %s in %s, want orders in prod", id.Service(), id.Mesh())
				}
				return
			}
			if err == nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Load() = %v, want an error wrapping %v", err, tt.wantErr)
			}
		})
	}
}

func TestIssueRefusesToOutliveTheCA(t *testing.T) {
	ca, err := identity.NewCA("prod", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Issue("orders", 2*time.Hour, time.Now()); err == nil {
		t.Error("Issue(ttl beyond the CA) = nil, want an error")
	}
	for _, bad := range []string{"", "a.b", "a b", "orders*"} {
		if _, _, err := ca.Issue(bad, time.Minute, time.Now()); err == nil {
			t.Errorf("Issue(%q) = nil, want an error", bad)
		}
	}
}

func TestDescribe(t *testing.T) {
	m := newTestMesh(t, "prod")
	c, err := identity.ParseCert(m.certDER(t, "orders", time.Hour, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	in := identity.Describe(c)
	if in.Service != "orders" || in.Mesh != "prod" || in.CA || !in.KeyAgreement || in.Serial == "" {
		t.Errorf("Describe(orders) = %+v", in)
	}
	ca := identity.Describe(m.ca.Cert())
	if ca.Service != "" || ca.Mesh != "prod" || !ca.CA || ca.KeyAgreement {
		t.Errorf("Describe(CA) = %+v", ca)
	}
}

func TestResolve(t *testing.T) {
	m := newTestMesh(t, "prod")
	self := m.identity(t, "orders")
	web := m.identity(t, "web")
	other := m.identity(t, "other")
	known := m.identity(t, "known")
	peer(t, self, known)

	tests := []struct {
		name    string
		id      identity.KeyID
		cert    []byte
		want    string // service
		wantErr error
	}{
		{"known, no certificate", known.KeyID(), nil, "known", nil},
		{"unknown, with its certificate", web.KeyID(), web.Cert().Raw, "web", nil},
		{"unknown, no certificate", other.KeyID(), nil, "", identity.ErrUnknownKey},
		{"unknown, another's certificate", other.KeyID(), web.Cert().Raw, "", identity.ErrUnknownKey},
		{"unknown, garbage certificate", identity.KeyIDOf([]byte("x")), []byte("x"), "", identity.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := self.Verifier().Resolve(tt.id, tt.cert)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Resolve() = %v, want %v", err, tt.wantErr)
			}
			if err == nil && p.Service() != tt.want {
				t.Errorf("Resolve() = %s, want %s", p.Service(), tt.want)
			}
		})
	}
}
