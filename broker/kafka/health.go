package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// Probing the cluster. A lost connection is confirmed or dismissed by a
// metadata request bounded by probeTimeout; while no broker answers, one is
// asked again every probeInterval. A probe that fails because no broker
// could be reached (refused, reset) counts at once; probes that only ran
// out of time count once they have failed for slowFor, so a busy cluster
// (a thousand topics created at once) is not taken for a lost one.
const (
	probeTimeout  = 750 * time.Millisecond
	probeInterval = 250 * time.Millisecond
	slowFor       = 2 * time.Second
)

// health tracks whether the cluster is reachable. franz-go reconnects on
// its own and says so only through hooks, so every client of a Conn
// reports its lost connections and failed dials here, and the Conn's
// watcher asks the cluster whether it is still there.
type health struct {
	down atomic.Bool   // no broker answered the last probe
	kick chan struct{} // a connection was lost or could not be made
	up   chan struct{} // a client connected while down: probe now
}

func newHealth() *health { return &health{kick: make(chan struct{}, 1), up: make(chan struct{}, 1)} }

// suspect wakes the watcher; it never blocks, as franz-go's hooks must not.
func (h *health) suspect() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// clientHook is one franz-go client's hooks into health. Its client's own
// Close closes connections too, which says nothing about the cluster: off
// is set first.
type clientHook struct {
	h   *health
	off atomic.Bool
}

func (h *health) hook() *clientHook { return &clientHook{h: h} }

// OnBrokerConnect implements kgo.HookBrokerConnect: a failed dial is a
// reason to probe, and so, while the cluster is away, is a dial that
// worked: it may be back.
func (k *clientHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	switch {
	case k.off.Load():
	case err != nil:
		k.h.suspect()
	case k.h.down.Load():
		select {
		case k.h.up <- struct{}{}:
		default:
		}
	}
}

// OnBrokerE2E implements kgo.HookBrokerE2E: while the cluster is taken
// for away, a request a broker answered proves it back, even when the
// probes are slow to say so (a starved process).
func (k *clientHook) OnBrokerE2E(_ kgo.BrokerMetadata, _ int16, e2e kgo.BrokerE2E) {
	if e2e.WriteErr != nil || e2e.ReadErr != nil || !k.h.down.Load() || k.off.Load() {
		return
	}
	k.h.down.Store(false)
	select {
	case k.h.up <- struct{}{}:
	default:
	}
}

// OnBrokerDisconnect implements kgo.HookBrokerDisconnect: so is a lost
// connection, though franz-go also closes idle ones (the probe then finds
// the cluster there and nothing changes).
func (k *clientHook) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) {
	if !k.off.Load() {
		k.h.suspect()
	}
}

// Connected implements broker.Connectivity: false from the first probe
// after a lost connection that could reach no broker (within about a second
// of losing every broker, when their connections close), or after 2 s of
// probes without an answer, until a broker answers again.
func (c *Conn) Connected() bool { return !c.health.down.Load() }

// watch probes the cluster whenever a client lost a connection or failed
// to dial, until a broker answers; then it checks the topics in use, which
// a cluster that came back empty no longer has. It runs until Close.
func (c *Conn) watch() {
	for {
		select {
		case <-c.done:
			return
		case <-c.health.kick:
		}
		var slowSince time.Time
		wasDown := false
		for {
			err := c.probe()
			if err == nil {
				break
			}
			select {
			case <-c.done:
				return // the probe failed because Close cancelled it
			default:
			}
			if wasDown && !c.health.down.Load() {
				break // a client's request was answered meanwhile (OnBrokerE2E)
			}
			lost := !errors.Is(err, context.DeadlineExceeded)
			if !lost {
				if slowSince.IsZero() {
					slowSince = time.Now()
				}
				lost = time.Since(slowSince) >= slowFor
			}
			if lost && !c.health.down.Swap(true) {
				c.logger.Warn("Kafka cluster unreachable", telemetry.KeyErr, err)
			}
			wasDown = wasDown || c.health.down.Load()
			// The probe's own dial does not count as a client connecting;
			// another client's dial during the wait cuts it short, so the
			// return is noticed as soon as franz-go reconnects.
			select {
			case <-c.health.up:
			default:
			}
			select {
			case <-c.done:
				return
			case <-time.After(probeInterval):
			case <-c.health.up:
			}
		}
		if c.health.down.Swap(false) || wasDown {
			c.logger.Info("Kafka cluster reachable again")
		}
		c.startRecover()
	}
}

// startRecover asks recoverLoop for a check of the topics in use. The
// watcher goes on at once: the check's requests wait for a cluster that
// may be gone again, and the watcher must go on noticing that (a cluster
// lost again during a check was reported 3.7 s late, after the check gave
// up). Requests made during a check coalesce into one more check after it.
func (c *Conn) startRecover() {
	select {
	case c.recheck <- struct{}{}:
	default:
	}
}

// recoverLoop runs the topic checks startRecover asks for, one at a time,
// until Close.
func (c *Conn) recoverLoop() {
	for {
		select {
		case <-c.done:
			return
		case <-c.recheck:
			c.recoverTopics()
		}
	}
}

// probe asks a broker for metadata: nil when one answered.
func (c *Conn) probe() error {
	ctx, cancel := context.WithTimeout(c.ctx, probeTimeout)
	defer cancel()
	err := c.cl.Ping(ctx)
	if err != nil && ctx.Err() == nil {
		// A request on a connection that was cut fails (EOF) and drops the
		// connection: a second ping dials anew.
		err = c.cl.Ping(ctx)
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
	}
	if err != nil && c.ctx.Err() == nil {
		c.logger.Debug("probe failed", telemetry.KeyErr, err)
	}
	return err
}
