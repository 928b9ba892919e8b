package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// keys are the private keys of a key file: a service's holds both, the CA's
// only the signing key.
type keys struct {
	sign ed25519.PrivateKey
	kex  *ecdh.PrivateKey
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// encodeKeys writes sign and, if not nil, kex as PKCS #8 "PRIVATE KEY"
// blocks, in that order.
func encodeKeys(sign ed25519.PrivateKey, kex *ecdh.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(sign)
	if err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if kex == nil {
		return out, nil
	}
	der, err = x509.MarshalPKCS8PrivateKey(kex)
	if err != nil {
		return nil, fmt.Errorf("encode key-agreement key: %w", err)
	}
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})...), nil
}

// parseKeys reads the PKCS #8 blocks of a key file: at most one Ed25519 and
// one X25519 key.
func parseKeys(b []byte) (keys, error) {
	var k keys
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "PRIVATE KEY" {
			return keys{}, fmt.Errorf("%w: PEM block %q, want PRIVATE KEY", ErrMalformed, block.Type)
		}
		key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return keys{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		switch key := key.(type) {
		case ed25519.PrivateKey:
			if k.sign != nil {
				return keys{}, fmt.Errorf("%w: two Ed25519 keys", ErrMalformed)
			}
			k.sign = key
		case *ecdh.PrivateKey:
			if key.Curve() != ecdh.X25519() || k.kex != nil {
				return keys{}, fmt.Errorf("%w: want one X25519 key-agreement key", ErrMalformed)
			}
			k.kex = key
		default:
			return keys{}, fmt.Errorf("%w: %T key, want Ed25519 or X25519", ErrMalformed, key)
		}
	}
	if k.sign == nil && k.kex == nil {
		return keys{}, fmt.Errorf("%w: no PEM private key", ErrMalformed)
	}
	return k, nil
}

func readCert(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	c, err := ParseCert(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return c, nil
}

// writeFileAtomic replaces file with data through a temporary file in the
// same directory and a rename.
func writeFileAtomic(file string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	// After the rename this finds nothing; on failure it cleans up.
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}
