package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	"github.com/segmentio/kafka-go/protocol/saslauthenticate"
	"github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// wire is one connection to one Kafka broker, speaking the protocol through
// kafka-go's protocol package. It carries one request at a time and is not
// safe for concurrent use: each owner (a sender, a fetch loop, a control
// slot) has its own.
type wire struct {
	addr     string
	nc       net.Conn
	pc       *protocol.Conn
	clientID string
	corr     int32
	versions map[protocol.ApiKey]int16
}

// dialWire connects to addr, negotiates API versions and authenticates.
func dialWire(ctx context.Context, cfg *config, addr string) (*wire, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.dialTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg.tls != nil {
		tc := cfg.tls
		if tc.ServerName == "" {
			tc = tc.Clone()
			tc.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tlsConn := tls.Client(nc, tc)
		if err := tlsConn.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", addr, err)
		}
		nc = tlsConn
	}
	w := &wire{addr: addr, nc: nc, pc: protocol.NewConn(nc, cfg.clientID), clientID: cfg.clientID}
	if err := w.negotiate(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	if cfg.sasl != nil {
		if err := w.authenticate(ctx, cfg.sasl); err != nil {
			nc.Close()
			return nil, fmt.Errorf("%s: sasl %s: %w", addr, cfg.sasl.Name(), err)
		}
	}
	return w, nil
}

// negotiate picks, for every API, the highest version both kafka-go and the
// broker speak.
func (w *wire) negotiate(ctx context.Context) error {
	r, err := w.roundTrip(ctx, &apiversions.Request{})
	if err != nil {
		return fmt.Errorf("api versions: %w", err)
	}
	res := r.(*apiversions.Response)
	if res.ErrorCode != 0 {
		return fmt.Errorf("api versions: %w", kafka.Error(res.ErrorCode))
	}
	w.versions = make(map[protocol.ApiKey]int16, len(res.ApiKeys))
	for _, k := range res.ApiKeys {
		key := protocol.ApiKey(k.ApiKey)
		hi := min(key.MaxVersion(), k.MaxVersion)
		if hi >= max(key.MinVersion(), k.MinVersion) {
			w.versions[key] = hi
		}
	}
	return nil
}

func (w *wire) authenticate(ctx context.Context, m sasl.Mechanism) error {
	r, err := w.roundTrip(ctx, &saslhandshake.Request{Mechanism: m.Name()})
	if err != nil {
		return err
	}
	if code := r.(*saslhandshake.Response).ErrorCode; code != 0 {
		return kafka.Error(code)
	}
	host, port, _ := net.SplitHostPort(w.addr)
	p, _ := strconv.Atoi(port)
	ctx = sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: p})
	sess, state, err := m.Start(ctx)
	if err != nil {
		return err
	}
	for done := false; !done; {
		r, err := w.roundTrip(ctx, &saslauthenticate.Request{AuthBytes: state})
		if err != nil {
			return err
		}
		res := r.(*saslauthenticate.Response)
		if res.ErrorCode != 0 {
			if res.ErrorMessage != "" {
				return fmt.Errorf("%w: %s", kafka.Error(res.ErrorCode), res.ErrorMessage)
			}
			return kafka.Error(res.ErrorCode)
		}
		if done, state, err = sess.Next(ctx, res.AuthBytes); err != nil {
			return err
		}
	}
	return nil
}

// roundTrip sends msg and reads the response. Cancelling ctx interrupts it.
// After an error the wire is unusable: close it.
func (w *wire) roundTrip(ctx context.Context, msg protocol.Message) (protocol.Message, error) {
	r, _, err := w.exchange(ctx, msg)
	return r, err
}

// exchange is roundTrip that also reports whether the request may have
// reached the broker: sent is false when it certainly did not.
func (w *wire) exchange(ctx context.Context, msg protocol.Message) (res protocol.Message, sent bool, err error) {
	key := msg.ApiKey()
	v, ok := w.versions[key]
	if !ok && key != protocol.ApiVersions { // ApiVersions v0 comes first
		return nil, false, fmt.Errorf("broker %s does not support %s", w.addr, key)
	}
	if p, ok := msg.(protocol.PreparedMessage); ok {
		p.Prepare(v)
	}
	dl, _ := ctx.Deadline()
	_ = w.nc.SetDeadline(dl) // fails only on a closed conn, which the I/O reports
	// Cancelling ctx puts the deadline in the past, which fails the
	// blocked read or write at once.
	stop := context.AfterFunc(ctx, func() { _ = w.nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	w.corr++
	if err := protocol.WriteRequest(w.pc, v, w.corr, w.clientID, msg); err != nil {
		return nil, false, w.cause(ctx, err)
	}
	id, res, err := protocol.ReadResponse(w.pc, key, v)
	if err != nil {
		return nil, true, w.cause(ctx, err)
	}
	if id != w.corr {
		return nil, true, fmt.Errorf("%s: response to request %d, want %d", w.addr, id, w.corr)
	}
	if !stop() {
		// ctx ended as the response arrived: the deadline may be in the
		// past now, so this wire cannot be trusted with another request.
		return nil, true, ctx.Err()
	}
	return res, true, nil
}

// cause prefers ctx's error to the i/o error it provoked.
func (w *wire) cause(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (w *wire) close() { w.nc.Close() }

// health logs a broker connection being lost once, and its coming back
// once, however many of this Conn's connections to it notice.
type health struct {
	logger *slog.Logger
	mu     sync.Mutex
	down   map[string]bool
	armed  bool // Dial succeeded: failures before are Dial's error, not logs
}

// arm starts logging.
func (h *health) arm() {
	h.mu.Lock()
	h.armed = true
	h.mu.Unlock()
}

// lost records that a connection to addr failed. ctx errors are not the
// broker's fault and are ignored.
func (h *health) lost(addr string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.armed && !h.down[addr] {
		h.down[addr] = true
		h.logger.Warn("broker connection lost", telemetry.KeyBroker, addr, telemetry.KeyErr, err)
	}
}

// ok records a working connection to addr.
func (h *health) ok(addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down[addr] {
		delete(h.down, addr)
		h.logger.Info("broker reconnected", telemetry.KeyBroker, addr)
	}
}

// backoff is a jittered exponential delay from 50 ms to 2 s, so that a fleet
// of sidecars does not retry in lock-step.
type backoff struct{ n int }

func (b *backoff) next() time.Duration {
	d := min(50*time.Millisecond<<min(b.n, 6), 2*time.Second)
	b.n++
	return d/2 + rand.N(d/2)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits for d, or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
