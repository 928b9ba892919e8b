package nats

import (
	"fmt"
	"net/url"

	"github.com/nats-io/nats.go"
)

// securityOptions reads the URL's security options and returns the URL
// without them: tls_ca=FILE trusts the CA certificates in FILE (PEM) for
// a tls:// server, tls_cert=FILE and tls_key=FILE present a client
// certificate, nkey=FILE authenticates with the NKey seed in FILE. User and
// password, or a token, stay in the URL's userinfo.
func securityOptions(u *url.URL) (string, []nats.Option, error) {
	q := u.Query()
	var opts []nats.Option
	if ca := q.Get("tls_ca"); ca != "" {
		opts = append(opts, nats.RootCAs(ca))
	}
	cert, key := q.Get("tls_cert"), q.Get("tls_key")
	if (cert == "") != (key == "") {
		return "", nil, fmt.Errorf("nats URL: tls_cert and tls_key go together (a client certificate and its key, PEM files)")
	}
	if cert != "" {
		opts = append(opts, nats.ClientCert(cert, key))
	}
	if seed := q.Get("nkey"); seed != "" {
		opt, err := nats.NkeyOptionFromSeed(seed)
		if err != nil {
			return "", nil, fmt.Errorf("nats URL option nkey=%s: %w (want a file holding an NKey user seed)", seed, err)
		}
		opts = append(opts, opt)
	}
	for k := range q {
		switch k {
		case "tls_ca", "tls_cert", "tls_key", "nkey":
		default:
			return "", nil, fmt.Errorf("nats URL option %q is unknown (known: nkey, tls_ca, tls_cert, tls_key)", k)
		}
	}
	clean := *u
	clean.RawQuery = ""
	return clean.String(), opts, nil
}
