package kafka

import (
	"context"
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

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	fsasl "github.com/twmb/franz-go/pkg/sasl"
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

// maxBatch is the size of the record batch that carries one message of
// maxMessage bytes; topics busmesh creates accept batches this large.
func (c *config) maxBatch() int { return batchSize(c.maxMessage) }

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
			b, err := strconv.ParseBool(val)
			if err != nil {
				bad(key, val, `"true" or "false"`)
			}
			useTLS = useTLS || b
		case "tls_ca":
			caFile, useTLS = val, true
		case "sasl":
			mech = strings.ToLower(val)
		case "client_id":
			if val == "" {
				bad(key, val, "a non-empty name")
			}
			c.clientID = val
		default:
			errs = append(errs, fmt.Errorf("kafka URL option %q is unknown (known: acks, client_id, fetch_wait, max_message_bytes, partitions, replication, retention, sasl, tls, tls_ca)", key))
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
		return plain.Mechanism{Username: user.Username(), Password: pass}, nil
	case "scram-sha-256":
		return franzMechanism{auth.AsSha256Mechanism()}, nil
	case "scram-sha-512":
		return franzMechanism{auth.AsSha512Mechanism()}, nil
	}
	return nil, fmt.Errorf("kafka URL option sasl: %q is not plain, scram-sha-256 or scram-sha-512", name)
}

// franzMechanism adapts a franz-go SASL mechanism (its SCRAM needs nothing
// outside the standard library) to kafka-go's sasl.Mechanism, so that the
// consumer groups, which dial with kafka-go, authenticate the same way.
type franzMechanism struct{ m fsasl.Mechanism }

func (f franzMechanism) Name() string { return f.m.Name() }

func (f franzMechanism) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	host := ""
	if md := sasl.MetadataFromContext(ctx); md != nil {
		host = md.Host
	}
	s, first, err := f.m.Authenticate(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	return franzSession{s}, first, nil
}

type franzSession struct{ s fsasl.Session }

func (s franzSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	return s.s.Challenge(challenge)
}

// batchSize returns the size, as the broker counts it, of a record batch
// holding one record with an n-byte value, no key and no headers, encoded as
// kafka-go encodes it: 61 bytes of batch header, then the record.
func batchSize(n int) int { return batchHeader + recordSize(n, 0) }

// batchHeader is the v2 record batch header, including the 12 bytes of
// offset and length before it that the broker's size limit counts.
const batchHeader = 61

// recordSize returns the encoded size of a record with an n-byte value at
// position i of its batch.
func recordSize(n, i int) int {
	body := 1 + // attributes
		1 + // timestamp delta: every record of a batch has the same time
		varintSize(int64(i)) +
		1 + // null key
		varintSize(int64(n)) + n +
		1 // no headers
	return varintSize(int64(body)) + body
}

// varintSize is the length of the zig-zag varint encoding of v.
func varintSize(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63)
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}
