package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/busmesh/busmesh/broker"
)

// Defaults for the URL's query options.
const (
	// DefaultPartitions is the partition count of the request topics busmesh
	// creates: enough for six instances of a service to share the work.
	DefaultPartitions = 6

	// DefaultPort is used for a broker address without a port.
	DefaultPort = "9092"

	defaultFetchWait   = 500 * time.Millisecond
	defaultDialTimeout = 5 * time.Second
	defaultRetention   = time.Hour
	maxMessageLimit    = 64 << 20
)

// config is what a broker URL asks for.
type config struct {
	addrs       []string
	partitions  int32
	replication int16
	maxMessage  int           // largest payload Publish accepts
	retention   time.Duration // of the topics busmesh creates
	acks        int16
	fetchWait   time.Duration
	dialTimeout time.Duration
	clientID    string
	tls         *tls.Config
	sasl        sasl.Mechanism // nil: no authentication
	metrics     bool           // push KIP-714 client metrics to a cluster that asks for them
}

// partitionsFor returns how many partitions a new topic for subject gets:
// inboxes are one sidecar's reply topic and need one; request topics need
// one per instance that should share the work.
func (c *config) partitionsFor(subject string) int32 {
	if broker.IsInbox(subject) {
		return 1
	}
	return c.partitions
}

// maxBatch is the largest record batch the producer builds; topics busmesh
// creates accept batches this large, so a message of maxMessage bytes fits.
func (c *config) maxBatch() int { return c.maxMessage + batchOverhead }

// parseConfig reads a kafka:// or kafkas:// URL. Errors name the query key,
// the bad value and what is allowed; they never show the password.
func parseConfig(u *url.URL) (*config, error) {
	c := &config{
		partitions:  DefaultPartitions,
		replication: -1,
		maxMessage:  broker.DefaultMaxMessageBytes,
		retention:   defaultRetention,
		acks:        1,
		fetchWait:   defaultFetchWait,
		dialTimeout: defaultDialTimeout,
		clientID:    "busmesh",
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, DefaultPort)
		}
		c.addrs = append(c.addrs, h)
	}
	if len(c.addrs) == 0 {
		return nil, fmt.Errorf("kafka URL has no broker address (example: %s://127.0.0.1:9092)", Scheme)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("kafka URL path %q: a Kafka URL has no path", u.Path)
	}
	useTLS := u.Scheme == TLSScheme
	var errs []error
	bad := func(key, val, allowed string) {
		errs = append(errs, fmt.Errorf("kafka URL option %s: %q is not %s", key, val, allowed))
	}
	intIn := func(key, val string, lo, hi int) int {
		n, err := strconv.Atoi(val)
		if err != nil || n < lo || n > hi {
			bad(key, val, fmt.Sprintf("a number from %d to %d", lo, hi))
		}
		return n
	}
	durIn := func(key, val string, lo, hi time.Duration, example string) time.Duration {
		d, err := time.ParseDuration(val)
		if err != nil || d < lo || d > hi {
			bad(key, val, fmt.Sprintf("a duration from %v to %v (example: %q)", lo, hi, example))
		}
		return d
	}
	boolOf := func(key, val string) bool {
		b, err := strconv.ParseBool(val)
		if err != nil {
			bad(key, val, `"true" or "false"`)
		}
		return b
	}
	var mech, caFile string
	q := u.Query()
	for _, key := range slices.Sorted(func(yield func(string) bool) {
		for k := range q {
			if !yield(k) {
				return
			}
		}
	}) {
		val := q.Get(key)
		switch key {
		case "partitions":
			c.partitions = int32(intIn(key, val, 1, 10000))
		case "replication":
			if val != "-1" {
				c.replication = int16(intIn(key, val, 1, 32767))
			}
		case "max_message_bytes":
			c.maxMessage = intIn(key, val, 1, maxMessageLimit)
		case "retention":
			c.retention = durIn(key, val, time.Minute, 365*24*time.Hour, "1h")
		case "fetch_wait":
			c.fetchWait = durIn(key, val, time.Millisecond, 30*time.Second, "500ms")
		case "acks":
			switch val {
			case "1", "leader":
				c.acks = 1
			case "all", "-1":
				c.acks = -1
			default:
				bad(key, val, `"1" or "all"`)
			}
		case "tls":
			useTLS = useTLS || boolOf(key, val)
		case "tls_ca":
			caFile, useTLS = val, true
		case "sasl":
			mech = strings.ToLower(val)
		case "client_metrics":
			c.metrics = boolOf(key, val)
		case "client_id":
			if val == "" {
				bad(key, val, "a non-empty name")
			}
			c.clientID = val
		default:
			errs = append(errs, fmt.Errorf("kafka URL option %q is unknown (known: acks, client_id, client_metrics, fetch_wait, max_message_bytes, partitions, replication, retention, sasl, tls, tls_ca)", key))
		}
	}
	if useTLS {
		c.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			pool := x509.NewCertPool()
			if err != nil || !pool.AppendCertsFromPEM(pem) {
				bad("tls_ca", caFile, "a readable PEM file of CA certificates")
			}
			c.tls.RootCAs = pool
		}
	}
	m, err := mechanism(mech, u.User)
	if err != nil {
		errs = append(errs, err)
	}
	c.sasl = m
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// mechanism returns the SASL mechanism for the URL's sasl option and
// userinfo; nil when the URL has neither.
func mechanism(name string, user *url.Userinfo) (sasl.Mechanism, error) {
	if user == nil {
		if name != "" {
			return nil, fmt.Errorf("kafka URL option sasl=%s needs user:password@ in the URL", name)
		}
		return nil, nil
	}
	pass, _ := user.Password()
	auth := scram.Auth{User: user.Username(), Pass: pass}
	switch name {
	case "", "plain":
		return plain.Auth{User: user.Username(), Pass: pass}.AsMechanism(), nil
	case "scram-sha-256":
		return auth.AsSha256Mechanism(), nil
	case "scram-sha-512":
		return auth.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafka URL option sasl: %q is not plain, scram-sha-256 or scram-sha-512", name)
}

// batchOverhead is room for a record batch's header and one record's
// framing: a batch of this plus MaxMessageBytes carries any message
// Publish accepts.
const batchOverhead = 1 << 10
