package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/busmesh/busmesh/internal/inject"
)

func newInjectCmd() *cobra.Command {
	opts := inject.Options{Image: "busmesh:" + version}
	var quiet bool
	cmd := &cobra.Command{
		Use:   "inject [FILE|-]...",
		Short: "Add the busmesh sidecar to Kubernetes workloads",
		Long: `Read Kubernetes YAML (Pods, Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs, CronJobs; several documents per file) from the files or
standard input, and write it to standard output with the busmesh sidecar added
to every workload whose pod template has these annotations:

  busmesh.io/service    the service the pod serves (runs an adapter)
  busmesh.io/port       the application's port, where the adapter calls it
  busmesh.io/protocol   http (default), grpc, https or grpcs
  busmesh.io/app-tls    with https or grpcs: a Secret with ca.crt, tls.crt and
                        tls.key for the adapter's TLS to the application
  busmesh.io/app-server-name
                        the name the application's certificate must carry
  busmesh.io/health     a path the adapter checks, e.g. /healthz
  busmesh.io/upstreams  services the application calls, with local ports:
                        orders:9001,payments:9002 (runs an ambassador, also on
                        the shared port 127.0.0.1:15001)
  busmesh.io/broker     the broker URL (or --broker)
  busmesh.io/broker-secret
                        a Secret holding the broker URL under "url"
  busmesh.io/mesh       the mesh to join (default: default)
  busmesh.io/identity   a Secret with the sidecar's identity (tls.crt, tls.key,
                        ca.crt from busmesh ca issue), mounted at
                        /etc/busmesh/identity and named in its config

The sidecar is a native sidecar (an init container with restartPolicy:
Always: it starts before the application and stops after it). Everything else
passes through unchanged; injecting twice gives the same output as once.
Objects without busmesh.io annotations pass through as they are; what
happened to each object is reported on standard error. On any error nothing
is written and the exit status is 1.`,
		Example: `  busmesh inject deploy.yaml | kubectl apply -f -
  kubectl get deploy web -o yaml | busmesh inject --broker nats://nats:4222 - | kubectl apply -f -`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				args = []string{"-"}
			}
			var (
				out  bytes.Buffer
				errs []error
			)
			for _, name := range args {
				in, err := readInput(cmd.InOrStdin(), name)
				if err != nil {
					return usageError{err}
				}
				if name == "-" {
					name = "standard input"
				}
				var one bytes.Buffer
				results, err := inject.Inject(bytes.NewReader(in), &one, opts)
				if !quiet {
					for _, r := range results {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", name, r)
					}
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				if out.Len() > 0 && one.Len() > 0 {
					out.WriteString("---\n")
				}
				out.Write(one.Bytes())
			}
			if err := errors.Join(errs...); err != nil {
				return fmt.Errorf("inject: nothing written:\n%w", err)
			}
			_, err := cmd.OutOrStdout().Write(out.Bytes())
			return err
		},
	}
	cmd.Flags().StringVar(&opts.Image, "image", opts.Image, "the sidecar's image")
	cmd.Flags().StringVar(&opts.Broker, "broker", "", "broker URL for workloads without busmesh.io/broker")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "do not report each object on standard error")
	return cmd
}

// readInput reads the file name, or standard input for "-".
func readInput(stdin io.Reader, name string) ([]byte, error) {
	var (
		b   []byte
		err error
	)
	if name == "-" {
		name = "standard input"
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("inject: read %s: %w", name, err)
	}
	return b, nil
}
