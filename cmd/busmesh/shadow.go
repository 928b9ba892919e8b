package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// openShadows connects to the ambassador's other brokers (ambassador.brokers),
// which mirrors copy calls to. On error the ones opened are closed.
func openShadows(ctx context.Context, urls map[string]string, logger *slog.Logger) (map[string]broker.Broker, error) {
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
		out[name] = b
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
