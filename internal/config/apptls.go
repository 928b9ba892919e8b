package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
)

// AppTLS is the adapter's TLS toward its application (adapter.tls), for
// a legacy service that serves only TLS, or only to clients that show a
// certificate.
type AppTLS struct {
	// CA is a PEM file of the certificates that may sign the
	// application's. Default: the system's roots. It is read again when it
	// changes, so a rotated CA is trusted on the next connection without a
	// restart.
	CA string `yaml:"ca"`
	// ServerName is the name the application's certificate must carry.
	// Default: the target's host.
	ServerName string `yaml:"server_name"`
	// Cert and Key are PEM files of a client certificate and its private
	// key, for an application that asks for one (mutual TLS). They are read
	// again when they change, so a rotated certificate is shown on the next
	// connection without a restart.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// InsecureSkipVerify takes whatever certificate the application shows:
	// the connection is encrypted, to whoever answers. For a test bed only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// ClientConfig returns the TLS config of connections to the application
// whose target's host name (url.URL.Hostname) is host: t's roots, name
// (default host) and client certificate, TLS 1.2 at least. A nil t is the
// defaults. Its errors name the key.
func (t *AppTLS) ClientConfig(host string) (*tls.Config, error) {
	if t == nil {
		t = &AppTLS{}
	}
	name := t.ServerName
	if name == "" {
		name = host
	}
	if name == "" && !t.InsecureSkipVerify {
		// Checked for no name, any certificate of a trusted CA would do.
		return nil, errors.New("adapter.tls.server_name: the target names no host to check the application's certificate against")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CA != "" && !t.InsecureSkipVerify {
		roots := newRoots(t.CA)
		if _, err := roots.get(); err != nil {
			return nil, fmt.Errorf("adapter.tls.ca: %w", err)
		}
		// crypto/tls takes its roots once; to follow the CA file, the
		// handshake's own check is replaced by the same check against the
		// roots as they are now.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return roots.verify(cs, name) }
	}
	if t.Cert != "" || t.Key != "" {
		kp := newKeyPair(t.Cert, t.Key)
		if _, err := kp.get(); err != nil {
			return nil, fmt.Errorf("adapter.tls.cert: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	return cfg, nil
}

// loadRoots reads a PEM file of CA certificates.
func loadRoots(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%q: no PEM certificate in it", file)
	}
	return pool, nil
}

// roots are the CA certificates of a file, followed as it changes.
type roots struct{ *followed[*x509.CertPool] }

func newRoots(file string) roots {
	return roots{&followed[*x509.CertPool]{files: []string{file}, load: func() (*x509.CertPool, error) { return loadRoots(file) }}}
}

// verify checks the application's certificate chain as crypto/tls would:
// signed by the roots, for name, for serving.
func (r roots) verify(cs tls.ConnectionState, name string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the application showed no certificate")
	}
	pool, err := r.get()
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{Roots: pool, DNSName: name, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		// As crypto/tls words its own: "tls: failed to verify certificate: …".
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

// keyPair is a client certificate, followed as its files change.
type keyPair struct{ *followed[*tls.Certificate] }

func newKeyPair(cert, key string) keyPair {
	return keyPair{&followed[*tls.Certificate]{files: []string{cert, key}, load: func() (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
			return nil, fmt.Errorf("cert %q, key %q: %w", cert, key, err)
		}
		return &c, nil
	}}}
}

// followed is a value read from files, and read again when one of them
// changes modification time or size (a rotation), looked at most once a
// second: a handshake costs a stat per file, not a read.
type followed[T any] struct {
	files []string
	load  func() (T, error)

	mu      sync.Mutex
	current T
	loaded  bool
	stamp   []fileStamp
	checked time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(file string) (fileStamp, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.ModTime(), fi.Size()}, nil
}

// get returns the current value. A rotation caught halfway (files missing
// for a moment, or a certificate and a key that do not match yet) keeps
// the last good one.
func (f *followed[T]) get() (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.loaded && now.Sub(f.checked) < time.Second {
		return f.current, nil
	}
	f.checked = now
	stamp := make([]fileStamp, len(f.files))
	var err error
	for i, file := range f.files {
		if stamp[i], err = stampOf(file); err != nil {
			break
		}
	}
	if err == nil && f.loaded && slices.Equal(stamp, f.stamp) {
		return f.current, nil
	}
	if err == nil {
		var v T
		if v, err = f.load(); err == nil {
			f.current, f.stamp, f.loaded = v, stamp, true
			return v, nil
		}
	}
	if f.loaded {
		return f.current, nil
	}
	var zero T
	return zero, err
}

// checkAppTLS checks adapter.tls against the target, and that its files
// load.
func checkAppTLS(errs *Error, t *AppTLS, target string) {
	if s := targetScheme(target); s != "https" && s != "grpcs" {
		errs.add("adapter.tls", 0, "set, but adapter.target %q does not speak TLS (allowed with https:// or grpcs://)", target)
	}
	if t.InsecureSkipVerify && t.CA != "" {
		errs.add("adapter.tls.insecure_skip_verify", 0, "true with ca %q, which it would ignore: choose one", t.CA)
	}
	if t.CA != "" {
		if _, err := loadRoots(t.CA); err != nil {
			errs.add("adapter.tls.ca", 0, "%q does not load: %v", t.CA, err)
		}
	}
	switch {
	case t.Cert == "" && t.Key == "":
	case t.Cert == "":
		errs.add("adapter.tls.key", 0, "%q without cert: set both (a client certificate and its private key) or neither", t.Key)
	case t.Key == "":
		errs.add("adapter.tls.cert", 0, "%q without key: set both (a client certificate and its private key) or neither", t.Cert)
	default:
		bad := false
		for _, f := range []struct{ key, file string }{{"adapter.tls.cert", t.Cert}, {"adapter.tls.key", t.Key}} {
			if _, err := os.Stat(f.file); err != nil {
				errs.add(f.key, 0, "%q: %v", f.file, err)
				bad = true
			}
		}
		if !bad {
			if _, err := newKeyPair(t.Cert, t.Key).get(); err != nil {
				errs.add("adapter.tls.cert", 0, "%v", err)
			}
		}
	}
}
