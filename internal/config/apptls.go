package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// AppTLS is the adapter's TLS toward its application (adapter.tls), for
// a legacy service that serves only TLS, or only to clients that show a
// certificate.
type AppTLS struct {
	// CA is a PEM file of the certificates that may sign the
	// application's. Default: the system's roots.
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
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CA != "" {
		roots, err := loadRoots(t.CA)
		if err != nil {
			return nil, fmt.Errorf("adapter.tls.ca: %w", err)
		}
		cfg.RootCAs = roots
	}
	if t.Cert != "" || t.Key != "" {
		kp := &keyPair{cert: t.Cert, key: t.Key}
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

// keyPair is a client certificate read from its files, and read again
// when either file's modification time or size changes (a rotation), at
// most once a second: a handshake costs two stats, not two reads.
type keyPair struct {
	cert, key string

	mu      sync.Mutex
	current *tls.Certificate
	stamp   [2]fileStamp
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

// get returns the current certificate. A rotation caught halfway (a
// certificate and a key that do not match yet) keeps the last good one.
func (k *keyPair) get() (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := time.Now()
	if k.current != nil && now.Sub(k.checked) < time.Second {
		return k.current, nil
	}
	k.checked = now
	var stamp [2]fileStamp
	var err error
	for i, f := range []string{k.cert, k.key} {
		if stamp[i], err = stampOf(f); err != nil {
			break
		}
	}
	if err == nil && k.current != nil && stamp == k.stamp {
		return k.current, nil
	}
	if err == nil {
		var c tls.Certificate
		if c, err = tls.LoadX509KeyPair(k.cert, k.key); err == nil {
			k.current, k.stamp = &c, stamp
			return k.current, nil
		}
	}
	if k.current != nil {
		return k.current, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return nil, fmt.Errorf("cert %q, key %q: %w", k.cert, k.key, err)
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
			if _, err := (&keyPair{cert: t.Cert, key: t.Key}).get(); err != nil {
				errs.add("adapter.tls.cert", 0, "%v", err)
			}
		}
	}
}
