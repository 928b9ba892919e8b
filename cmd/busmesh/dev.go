package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/telemetry"
)

const devService = "demo"

func newDevCmd() *cobra.Command {
	var brokerKind, httpAddr, serviceAddr, adminAddr, logLevel, id string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole mesh in one process: broker, demo service, adapter, ambassador",
		Long: `Run a mesh on the embedded NATS broker, with a built-in demo service behind an
adapter and an ambassador in front, and print a curl command to call the
service through the broker. Other sidecars can join the printed broker URL.

--broker kafka runs an in-process Kafka cluster (kfake) instead, which keeps
its records in memory, about 16 MiB per partition; --broker rabbitmq uses
the RabbitMQ at $BUSMESH_BROKER, or amqp://guest:guest@127.0.0.1:5672/.

A port in use stops it with the flag that moves it (127.0.0.1:0 picks a free
port; the printed commands name the ports in use). Two dev meshes on one
RabbitMQ need their own --id: a second one with the same id is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := telemetry.NewLogger(os.Stderr, logLevel, "text")
			if err != nil {
				return usageError{err}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()

			brokerURL, brokerName, stopBroker, err := devBroker(brokerKind)
			if err != nil {
				return err
			}
			defer stopBroker()

			demoLn, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			demo := &http.Server{Handler: demoHandler("dev"), ReadHeaderTimeout: 10 * time.Second}
			go func() { _ = demo.Serve(demoLn) }() // ends when Close below stops it
			defer demo.Close()

			cfg := config.Default()
			cfg.ID = id
			cfg.Broker = brokerURL
			cfg.Admin = adminAddr
			cfg.Log.Level = logLevel
			cfg.Ambassador = config.NewAmbassador()
			cfg.Ambassador.Service = "dev"
			cfg.Ambassador.HTTP = httpAddr
			cfg.Ambassador.Upstreams = map[string]string{devService: serviceAddr}
			cfg.Adapter = config.NewAdapter()
			cfg.Adapter.Service = devService
			cfg.Adapter.Target = "http://" + demoLn.Addr().String()
			// Security on: one identity, of the demo service, for both sides.
			id, removeCA, err := devIdentity(cfg.Mesh, devService)
			if err != nil {
				return err
			}
			defer removeCA()
			cfg.Identity, cfg.Ambassador.Service = id, devService
			cfg.Normalize()
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			sc, err := startSidecarWith(ctx, cfg, logger, startHints{
				flags: map[string]string{"admin": "--admin", "ambassador.http": "--http",
					"ambassador.upstreams." + devService: "--service-port"},
				duplicateFix: "pass --id NAME (each dev mesh on a shared broker needs its own), or stop the other",
			})
			if err != nil {
				return startError(cfg, err)
			}
			addrs := sc.ambassador.Addrs()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "busmesh dev: a mesh on %s at %s\n", brokerName, broker.Redact(brokerURL))
			fmt.Fprintf(out, "  demo service  http://%s (behind adapter %q)\n", demoLn.Addr(), devService)
			fmt.Fprintf(out, "  ambassador    %s (shared port: the Host header names the service)\n", addrs[0])
			fmt.Fprintf(out, "                %s (service %s)\n", addrs[1], devService)
			fmt.Fprintf(out, "  dashboard     http://%s/ (busmesh dashboard)\n", sc.admin.Addr())
			fmt.Fprintf(out, "  admin         %s (busmesh services, stats, call use it)\n\n", sc.admin.Addr())
			fmt.Fprintf(out, "Call the demo service through the broker:\n")
			fmt.Fprintf(out, "  curl -H 'Host: %s' http://%s/hello\n", devService, addrs[0])
			fmt.Fprintf(out, "  curl http://%s/echo -d 'any body'\n\n", addrs[1])
			// The URL as the user gave it, password included: it must work
			// when pasted.
			fmt.Fprintf(out, "Other sidecars join with: broker: %s\n", brokerURL)
			// The mesh has identities: a sidecar without one would have its
			// calls dropped (and drop the demo's), so say how to get one.
			caDir := filepath.Dir(cfg.Identity.CA)
			fmt.Fprintf(out, "  and an identity from this mesh's CA (removed when dev stops):\n")
			fmt.Fprintf(out, "    busmesh ca issue NAME --dir %s --out %s\n", caDir, caDir)
			fmt.Fprintf(out, "    identity: {cert: %s, key: %s, ca: %s}\n",
				filepath.Join(caDir, "NAME.crt"), filepath.Join(caDir, "NAME.key"), cfg.Identity.CA)
			fmt.Fprintf(out, "Press Ctrl-C to stop.\n")
			<-ctx.Done()
			return sc.shutdown()
		},
	}
	cmd.Flags().StringVar(&brokerKind, "broker", "nats", "nats (embedded server), kafka (in-process kfake cluster) or rabbitmq ($BUSMESH_BROKER, or the local default)")
	cmd.Flags().StringVar(&httpAddr, "http", "127.0.0.1:15001", "ambassador shared HTTP port")
	cmd.Flags().StringVar(&serviceAddr, "service-port", "127.0.0.1:15080", "ambassador port of the demo service")
	cmd.Flags().StringVar(&adminAddr, "admin", "127.0.0.1:15000", "admin port")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&id, "id", "dev", "the sidecar's id and the demo instance's name")
	return cmd
}

// devBroker starts or names the dev mesh's broker: its URL, a name to
// print, and how to stop it.
func devBroker(kind string) (url, name string, stop func(), err error) {
	switch kind {
	case "nats", "embedded", "kafka":
		return inProcessBroker(kind)
	case "rabbitmq":
		url := os.Getenv("BUSMESH_BROKER")
		if url == "" {
			url = "amqp://guest:guest@127.0.0.1:5672/"
		}
		return url, "RabbitMQ", func() {}, nil
	}
	return "", "", nil, usageError{fmt.Errorf("--broker %q: want nats, kafka or rabbitmq", kind)}
}
