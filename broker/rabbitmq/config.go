package rabbitmq

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Defaults for the URL options.
const (
	// DefaultExchange is the exchange every subject is published to
	// when the URL has no ?exchange=.
	DefaultExchange = "busmesh"

	// DefaultPrefetch is how many unacknowledged messages a queue-group
	// member holds when the URL has no ?prefetch=. A member whose handler
	// blocks strands at most this many, and the others take the rest; the
	// adapter's handler never blocks (it queues or refuses a call), so the
	// window only paces deliveries, and at 8 it throttled them (README,
	// "Benchmark", has the side-by-side run).
	DefaultPrefetch = 32

	// fanoutPrefetch bounds what a fan-out subscription holds in memory; a
	// slow subscriber's backlog waits on the broker, not in the client.
	fanoutPrefetch = 256
)

// Query options busmesh reads from the URL. The rest of the query is passed
// to amqp091-go (see passThrough).
const (
	optExchange = "exchange"
	optExchType = "exchange_type"
	optPrefetch = "prefetch"
	optConfirm  = "confirm"
	optMaxBytes = "max_message_bytes"
)

// tlsOptions are the TLS options of an amqps:// URL, named as the NATS
// and Kafka backends name theirs, and the amqp091-go option each becomes.
var tlsOptions = map[string]string{
	"tls_ca":          "cacertfile",
	"tls_cert":        "certfile",
	"tls_key":         "keyfile",
	"tls_server_name": "server_name_indication",
}

// passThrough lists the query options amqp091-go reads itself (ParseURI).
var passThrough = []string{
	"auth_mechanism", "cacertfile", "certfile", "channel_max",
	"connection_timeout", "heartbeat", "keyfile", "server_name_indication",
}

// config is what a broker URL asks for.
type config struct {
	amqpURL  string // for amqp091-go: credentials, host, vhost, its own options
	redacted string // for errors and logs
	user     string
	exchange string
	exchType string // the type declared when the exchange is new: direct or topic
	prefetch int
	confirm  bool
	maxBytes int // 0: derived from the server's version at connect
}

// parseConfig reads u: amqp://user:pass@host:5672/vhost?exchange=busmesh&prefetch=32.
// Errors name the option, the bad value and what is allowed; they never
// show the password.
func parseConfig(u *url.URL) (config, error) {
	cfg := config{
		redacted: u.Redacted(),
		exchange: DefaultExchange,
		exchType: amqp.ExchangeDirect,
		prefetch: DefaultPrefetch,
	}
	if u.Scheme != Scheme && u.Scheme != SchemeTLS {
		return cfg, fmt.Errorf("scheme %q is not %s or %s", u.Scheme, Scheme, SchemeTLS)
	}
	if u.Host == "" {
		return cfg, fmt.Errorf("no host (example: amqp://guest:guest@127.0.0.1:5672/)")
	}
	cfg.user = u.User.Username()
	q := u.Query()
	var bad []error
	tlsSet := map[string]string{} // tls_* option -> value
	for key, vals := range q {
		val := vals[len(vals)-1]
		switch key {
		case optExchange:
			if val == "" || len(val) > 255 || strings.HasPrefix(val, "amq.") {
				bad = append(bad, fmt.Errorf("option %s=%q: want 1 to 255 bytes, not starting with \"amq.\"", key, val))
			}
			cfg.exchange = val
		case optExchType:
			if val != amqp.ExchangeDirect && val != amqp.ExchangeTopic {
				bad = append(bad, fmt.Errorf("option %s=%q: want direct or topic", key, val))
			}
			cfg.exchType = val
		case optPrefetch:
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 65535 {
				bad = append(bad, fmt.Errorf("option %s=%q: want a number from 1 to 65535", key, val))
			}
			cfg.prefetch = n
		case optConfirm:
			b, err := strconv.ParseBool(val)
			if err != nil {
				bad = append(bad, fmt.Errorf("option %s=%q: want true or false", key, val))
			}
			cfg.confirm = b
		case optMaxBytes:
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				bad = append(bad, fmt.Errorf("option %s=%q: want a positive number of bytes", key, val))
			}
			cfg.maxBytes = n
		case "tls_ca", "tls_cert", "tls_key", "tls_server_name":
			if err := checkTLSOption(u.Scheme, key, val); err != nil {
				bad = append(bad, err)
			}
			tlsSet[key] = val
		default:
			if !slices.Contains(passThrough, key) {
				known := append([]string{optExchange, optExchType, optPrefetch, optConfirm, optMaxBytes,
					"tls_ca", "tls_cert", "tls_key", "tls_server_name"}, passThrough...)
				bad = append(bad, fmt.Errorf("unknown option %q (known: %s)", key, strings.Join(known, ", ")))
			}
			continue
		}
		q.Del(key)
	}
	for key, val := range tlsSet {
		opt := tlsOptions[key]
		if q.Has(opt) {
			bad = append(bad, fmt.Errorf("options %s and %s: the same setting given twice; keep %s", key, opt, key))
		}
		q.Set(opt, val)
	}
	if (q.Get("certfile") == "") != (q.Get("keyfile") == "") {
		bad = append(bad, fmt.Errorf("options tls_cert and tls_key go together (a client certificate and its key, PEM files)"))
	}
	if len(bad) > 0 {
		slices.SortFunc(bad, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return cfg, fmt.Errorf("broker URL %s: %w", cfg.redacted, errors.Join(bad...))
	}
	au := *u
	au.RawQuery = q.Encode()
	cfg.amqpURL = au.String()
	if _, err := amqp.ParseURI(cfg.amqpURL); err != nil {
		// ParseURI's errors do not repeat the URL.
		return cfg, fmt.Errorf("broker URL %s: %w", cfg.redacted, err)
	}
	return cfg, nil
}

// checkTLSOption checks a TLS option's value: only amqps:// has TLS, and
// files must be readable PEM (tls_ca: at least one certificate), so that a
// mistake is reported at start rather than as a failed handshake.
func checkTLSOption(scheme, key, val string) error {
	if scheme != SchemeTLS {
		return fmt.Errorf("option %s=%q: only with %s:// (TLS), not %s://", key, val, SchemeTLS, scheme)
	}
	if key == "tls_server_name" {
		if val == "" {
			return fmt.Errorf("option %s=%q: want the host name the server's certificate names", key, val)
		}
		return nil
	}
	data, err := os.ReadFile(val)
	switch {
	case err != nil:
		return fmt.Errorf("option %s=%q: want a readable PEM file: %w", key, val, err)
	case key == "tls_ca" && !x509.NewCertPool().AppendCertsFromPEM(data):
		return fmt.Errorf("option %s=%q: want a PEM file of CA certificates, found none", key, val)
	}
	return nil
}

// serverMaxBytes is the max_message_size a server of these properties has
// by default: 128 MiB for RabbitMQ 3.x, 16 MiB from 4.0 on. AMQP 0-9-1 does
// not tell a client the configured value, so a server configured otherwise
// needs ?max_message_bytes=. An unknown server gets the smaller value.
func serverMaxBytes(props amqp.Table) int {
	product, _ := props["product"].(string)
	version, _ := props["version"].(string)
	major, _, _ := strings.Cut(version, ".")
	if n, err := strconv.Atoi(major); err == nil && n < 4 && product == "RabbitMQ" {
		return 128 << 20
	}
	return 16 << 20
}

// groupQueue names the shared queue of a queue group: one per exchange,
// group and subject, so every member of the group, on any connection, meets
// on it. Names that would be ambiguous or too long are hashed.
func groupQueue(exchange, group, subject string) string {
	name := exchange + "/" + group + "/" + subject
	if len(name) <= 255 && !strings.Contains(exchange, "/") && !strings.Contains(group, "/") {
		return name
	}
	return "busmesh-group-" + hashName(exchange, group, subject)
}

// validSubject reports whether subject can be a routing key and, when bind
// is set, a binding key that means only itself.
func validSubject(subject string, bind bool) error {
	if subject == "" || len(subject) > 255 {
		return fmt.Errorf("subject must be 1 to 255 bytes, got %d", len(subject))
	}
	if bind {
		for tok := range strings.SplitSeq(subject, ".") {
			if tok == "*" || tok == "#" {
				return fmt.Errorf("wildcard token %q is not supported", tok)
			}
		}
	}
	return nil
}

// hashName is a short, stable digest of parts.
func hashName(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
