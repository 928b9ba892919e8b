package config_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/testutil"
)

// TestAppTLS: adapter.tls is checked against the target and its files are
// loaded when the config is, each problem named by its key; a good section
// gives the TLS config the adapter uses.
func TestAppTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeTestCert(t)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	section := func(target, tls string) string {
		return "broker: nats://127.0.0.1:4222\nadapter:\n  service: orders\n  target: " + target + "\n  tls:\n" + tls
	}
	for _, tc := range []struct {
		name, yaml string
		want       []string // key: message fragment; none when good
	}{
		{"https", section("https://127.0.0.1:8443", "    ca: "+ca+"\n    server_name: app.internal\n    cert: "+cert+"\n    key: "+key+"\n"), nil},
		{"grpcs", section("grpcs://127.0.0.1:9443", "    ca: "+ca+"\n"), nil},
		{"plain target", section("http://127.0.0.1:8080", "    ca: "+ca+"\n"),
			[]string{`adapter.tls: set, but adapter.target "http://127.0.0.1:8080" does not speak TLS (allowed with https:// or grpcs://)`}},
		{"cert without key", section("https://127.0.0.1:8443", "    cert: "+cert+"\n"),
			[]string{`adapter.tls.cert: "` + cert + `" without key: set both`}},
		{"key without cert", section("https://127.0.0.1:8443", "    key: "+key+"\n"),
			[]string{`adapter.tls.key: "` + key + `" without cert: set both`}},
		{"missing key file", section("https://127.0.0.1:8443", "    cert: "+cert+"\n    key: "+filepath.Join(dir, "none-key.pem")+"\n"),
			[]string{`adapter.tls.key: "` + filepath.Join(dir, "none-key.pem") + `": stat`}},
		{"upper-case scheme", section("GRPCS://127.0.0.1:9443", "    ca: "+ca+"\n"), nil},
		{"insecure with a name", section("https://127.0.0.1:8443", "    insecure_skip_verify: true\n    server_name: app.internal\n"), nil},
		{"missing ca", section("https://127.0.0.1:8443", "    ca: "+filepath.Join(dir, "none.pem")+"\n"),
			[]string{`adapter.tls.ca: "` + filepath.Join(dir, "none.pem") + `" does not load: open`}},
		{"not a certificate", section("https://127.0.0.1:8443", "    ca: "+garbage+"\n"),
			[]string{`adapter.tls.ca: "` + garbage + `" does not load: "` + garbage + `": no PEM certificate in it`}},
		{"key that is not one", section("https://127.0.0.1:8443", "    cert: "+cert+"\n    key: "+garbage+"\n"),
			[]string{`adapter.tls.cert: cert "` + cert + `", key "` + garbage + `": tls: failed to find any PEM data in key input`}},
		{"insecure with ca", section("https://127.0.0.1:8443", "    ca: "+ca+"\n    insecure_skip_verify: true\n"),
			[]string{`adapter.tls.insecure_skip_verify: true with ca "` + ca + `", which it would ignore: choose one`}},
		{"no host to check", section("https://:8443", "    ca: "+ca+"\n"),
			[]string{`adapter.target: "https://:8443" names no host, which a TLS application's certificate is checked against`}},
		{"grpcs health", "broker: nats://127.0.0.1:4222\nadapter:\n  service: orders\n  target: grpcs://127.0.0.1:9443\n  health:\n    grpc: true\n", nil},
		{"upper-case grpc health", "broker: nats://127.0.0.1:4222\nadapter:\n  service: orders\n  target: GRPC://127.0.0.1:9090\n  health:\n    grpc: true\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(tc.name+".yaml", []byte(tc.yaml), noEnv)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Parse = %v, want no error", err)
				}
				u, err := url.Parse(cfg.Adapter.Target)
				if err != nil {
					t.Fatal(err)
				}
				tlsCfg, err := cfg.Adapter.TLS.ClientConfig(u.Hostname())
				if err != nil {
					t.Fatalf("ClientConfig = %v", err)
				}
				if want := "127.0.0.1"; cfg.Adapter.TLS != nil && cfg.Adapter.TLS.ServerName != "" {
					if tlsCfg.ServerName != cfg.Adapter.TLS.ServerName {
						t.Errorf("ServerName = %q, want %q", tlsCfg.ServerName, cfg.Adapter.TLS.ServerName)
					}
				} else if tlsCfg.ServerName != want {
					t.Errorf("ServerName = %q, want the target's host %q", tlsCfg.ServerName, want)
				}
				if cfg.Adapter.TLS != nil && cfg.Adapter.TLS.Cert != "" {
					c, err := tlsCfg.GetClientCertificate(nil)
					if err != nil || c.Leaf == nil || c.Leaf.Subject.CommonName != "adapter" {
						t.Errorf("GetClientCertificate = %v, %v; want the certificate of %s", c, err, cert)
					}
				}
				return
			}
			var ce *config.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Parse = %v, want a config error", err)
			}
			var got []string
			for _, p := range ce.Problems {
				got = append(got, p.Key+": "+p.Msg)
			}
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || strings.HasPrefix(g, w)
				}
				if !found {
					t.Errorf("problems %q\nwant one starting %q", got, w)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("problems %q, want %d", got, len(tc.want))
			}
		})
	}
}

// writeTestCert writes a CA and a client certificate for "adapter" it
// signed, with its key, and returns their files.
func writeTestCert(t *testing.T) (ca, cert, key string) {
	t.Helper()
	c := testutil.NewCA(t, "test CA")
	cert, key = c.WriteFiles(t, c.Client(t, "adapter"), "adapter")
	return c.File, cert, key
}

// TestAppTLSFollowsCA: the adapter's TLS config checks the application's
// certificate as crypto/tls would (its CA, its name), against the CA file
// as it is now: after the file is replaced by a new CA's, the application's
// certificate of the new CA is taken on the next handshake and the old
// CA's is refused, without a new config.
func TestAppTLSFollowsCA(t *testing.T) {
	oldCA, newCA := testutil.NewCA(t, "old CA"), testutil.NewCA(t, "new CA")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	copyFile(t, oldCA.File, caFile)
	tlsCfg, err := (&config.AppTLS{CA: caFile, ServerName: "app.internal"}).ClientConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := (&config.AppTLS{CA: caFile}).ClientConfig(""); err == nil {
		t.Error("ClientConfig with no name to check the certificate for: no error")
	}
	handshakeWith := func(tlsCfg *tls.Config, server tls.Certificate) error {
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{server}})
			_ = s.SetDeadline(time.Now().Add(5 * time.Second))
			_ = s.Handshake()
			_ = s.Close()
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return tls.Client(c, tlsCfg).Handshake()
	}
	handshake := func(server tls.Certificate) error { return handshakeWith(tlsCfg, server) }

	// An IP target without server_name: the certificate is checked for the IP.
	byIP, err := (&config.AppTLS{CA: caFile}).ClientConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := handshakeWith(byIP, oldCA.Server(t, "127.0.0.1")); err != nil {
		t.Errorf("a certificate for the target's IP: %v", err)
	}
	if err := handshakeWith(byIP, oldCA.Server(t, "app.internal")); err == nil {
		t.Error("a certificate for another name than the target's IP: no error")
	}
	if err := handshake(oldCA.Server(t, "app.internal")); err != nil {
		t.Fatalf("the old CA's certificate for app.internal: %v", err)
	}
	var verr *tls.CertificateVerificationError
	var hostErr x509.HostnameError
	if err := handshake(oldCA.Server(t, "other.internal")); !errors.As(err, &verr) || !errors.As(err, &hostErr) {
		t.Errorf("a certificate for another name: %v, want a hostname error", err)
	}
	var unknown x509.UnknownAuthorityError
	if err := handshake(newCA.Server(t, "app.internal")); !errors.As(err, &verr) || !errors.As(err, &unknown) {
		t.Errorf("the new CA's certificate before the rotation: %v, want an unknown authority", err)
	}

	copyFile(t, newCA.File, caFile)
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(caFile, later, later); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the file is looked at once a second at most
	if err := handshake(newCA.Server(t, "app.internal")); err != nil {
		t.Errorf("the new CA's certificate after the rotation: %v", err)
	}
	if err := handshake(oldCA.Server(t, "app.internal")); !errors.As(err, &unknown) {
		t.Errorf("the old CA's certificate after the rotation: %v, want an unknown authority", err)
	}

	// A CA file caught empty mid-rotation keeps the CA before it.
	if err := os.WriteFile(caFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if err := handshake(newCA.Server(t, "app.internal")); err != nil {
		t.Errorf("with the CA file empty: %v, want the last good CA kept", err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
