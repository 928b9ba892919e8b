package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/admin"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// openShadows connects to the ambassador's other brokers (ambassador.brokers),
// which traffic splits send calls over and mirrors copy them to, each
// metered as a connection of its own name. On error the ones opened are
// closed.
func openShadows(ctx context.Context, urls map[string]string, logger *slog.Logger, metrics *telemetry.Metrics) (map[string]broker.Broker, error) {
	out := map[string]broker.Broker{}
	for _, name := range slices.Sorted(maps.Keys(urls)) {
		openCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		b, err := broker.Open(openCtx, urls[name], logger.With("mirror_broker", name))
		cancel()
		if err != nil {
			for _, o := range out {
				_ = o.Close() // the open error is the one to report
			}
			return nil, &mirrorBrokerError{name, err}
		}
		logger.Info("mirror broker connected", "mirror_broker", name, telemetry.KeyBroker, broker.Redact(urls[name]))
		out[name] = telemetry.MeterConnection(b, metrics, name, telemetry.System(urls[name]))
	}
	return out, nil
}

// mirrorBrokerError is a failure to open one of ambassador.brokers.
type mirrorBrokerError struct {
	name string
	err  error
}

func (e *mirrorBrokerError) Error() string {
	return fmt.Sprintf("ambassador.brokers.%s: %v", e.name, e.err)
}

func (e *mirrorBrokerError) Unwrap() error { return e.err }

// shadowStates reports each of ambassador.brokers' connections, by name,
// for the admin port's /info and the dashboard.
func (sc *sidecar) shadowStates() []admin.BrokerInfo {
	out := make([]admin.BrokerInfo, 0, len(sc.shadows))
	for _, name := range slices.Sorted(maps.Keys(sc.shadows)) {
		state := "connected"
		if !broker.Connected(sc.shadows[name]) {
			state = "disconnected"
		}
		out = append(out, admin.BrokerInfo{Name: name, Broker: broker.Redact(sc.cfg.Ambassador.Brokers[name]), State: state})
	}
	return out
}
