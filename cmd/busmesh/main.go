// Command busmesh is the one busmesh binary: the sidecar, the zero-setup dev
// mesh, and the CLI verbs. See docs/architecture.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	// The broker backends this binary ships.
	_ "github.com/busmesh/busmesh/broker/kafka"
	_ "github.com/busmesh/busmesh/broker/nats"
	_ "github.com/busmesh/busmesh/broker/rabbitmq"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintln(os.Stderr, "busmesh:", ee.err)
			}
			os.Exit(ee.code)
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "busmesh:", err)
		os.Exit(1)
	}
}

// usageError is a mistake in how busmesh was called or configured: exit
// status 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "busmesh",
		Short: "A service mesh whose data plane rides on a message bus",
		Long: `busmesh carries plain HTTP and gRPC calls (streaming ones too) between
services over NATS, Kafka or RabbitMQ. An ambassador sidecar takes calls
from an application on localhost ports; an adapter sidecar makes them to
the service and carries the answer back. Switching brokers is one line of
config.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newSidecarCmd(), newDevCmd(), newServicesCmd(), newStatsCmd(), newRoutesCmd(), newShiftCmd(), newCallCmd(), newCACmd(), newInjectCmd(), newVersionCmd(), newTopCmd())
	root.AddCommand(newCheckCmd(), newWaitReadyCmd(), newDashboardCmd())
	usageErrors(root)
	return root
}
