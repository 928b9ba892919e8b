//go:build nodev

package nats

import (
	"context"
	"errors"
	"log/slog"
	"net/url"

	"github.com/busmesh/busmesh/broker"
)

// HasEmbedded tells whether this build has the embedded NATS server: a
// nodev build has not.
const HasEmbedded = false

// errNoEmbedded is what a nodev build says of the embedded broker.
var errNoEmbedded = errors.New(`broker "embedded": ` + NoEmbedded + "; " + NoEmbeddedFix)

// openEmbedded refuses: a nodev build leaves the NATS server out (3 MB of
// a sidecar's idle memory) for sidecars, which join a shared broker.
func openEmbedded(context.Context, *url.URL, *slog.Logger) (broker.Broker, error) {
	return nil, errNoEmbedded
}
