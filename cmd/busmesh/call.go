package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/busmesh/busmesh/ambassador"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

func newCallCmd() *cobra.Command {
	var (
		f       adminFlags
		method  string
		data    string
		headers []string
	)
	cmd := &cobra.Command{
		Use:   "call SERVICE PATH",
		Short: "Call a service through a sidecar's ambassador and print the answer",
		Long: `Call a service through the ambassador of the sidecar at --admin, as an
application would, and print the status, headers and body. -d @FILE sends a
file's contents.

--timeout is the call's deadline in the mesh (sent as X-Busmesh-Timeout; a
-H 'X-Busmesh-Timeout: 2s' of your own wins). busmesh waits 2s longer for
the sidecar, so that a call past its deadline ends with the mesh's 504
timeout (exit status 3). The sidecar returns answers of up to about 4 MiB;
a larger one fails the call (exit status 1): fetch it from the ambassador's
port with curl.

Exit status: 0 when the service answered below 500; 3 when the mesh answered
instead of the service (the X-Busmesh-Error reason is printed: no-route,
no-healthy-instances, timeout, ...); 4 when the service answered 5xx; 1
when no sidecar answered at --admin; 2 for a mistake in the command line.`,
		Example: `  busmesh call demo /hello
  busmesh call orders /orders -X POST -d '{"qty":1}' -H 'Content-Type: application/json'`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &busmeshv1.CallRequest{Service: args[0], Method: method, Path: args[1],
				Headers: map[string]string{}, Timeout: durationpb.New(f.timeout)}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return usageError{fmt.Errorf("-H %q: want 'Name: value'", h)}
				}
				req.Headers[http.CanonicalHeaderKey(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
			f.wait = callWait(f.timeout, req.Headers[ambassador.HeaderTimeout])
			if name, ok := strings.CutPrefix(data, "@"); ok {
				b, err := os.ReadFile(name)
				if err != nil {
					return usageError{err}
				}
				req.Body = b
			} else {
				req.Body = []byte(data)
			}
			var answer *busmeshv1.CallResponse
			err := runAdmin(cmd, &f, "call "+args[0],
				func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.CallResponse, error) {
					resp, err := c.Call(ctx, req)
					answer = resp
					return resp, err
				},
				func(out io.Writer, resp *busmeshv1.CallResponse) error {
					fmt.Fprintf(out, "%d (%v)\n", resp.Status, resp.Duration.AsDuration())
					for _, k := range slices.Sorted(maps.Keys(resp.Headers)) {
						fmt.Fprintf(out, "%s: %s\n", k, resp.Headers[k])
					}
					fmt.Fprintln(out)
					_, err := out.Write(resp.Body)
					return err
				}, callResponseJSON)
			if err != nil || answer == nil {
				return err
			}
			return callExit(args[0], answer)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&method, "request", "X", "GET", "HTTP method")
	cmd.Flags().StringVarP(&data, "data", "d", "", "request body, or @FILE")
	cmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	return cmd
}

// callMargin is how much longer than the call's deadline in the mesh
// busmesh call waits for the sidecar: the mesh's 504 timeout, which says
// why, must arrive before the CLI's own deadline ends the call.
const callMargin = 2 * time.Second

// callWait is how long busmesh call waits for the sidecar: the call's
// deadline in the mesh, --timeout or the header's (which the sidecar
// keeps), and callMargin. A header that is no duration gets the mesh's
// 400 at once.
func callWait(timeout time.Duration, header string) time.Duration {
	if d, err := time.ParseDuration(header); err == nil && d > timeout {
		timeout = d
	}
	return timeout + callMargin
}

// callExit is the exit status of a call's answer (see the command's help):
// a mesh error or a 5xx is not a success for a script.
func callExit(service string, resp *busmeshv1.CallResponse) error {
	if reason := resp.Headers["X-Busmesh-Error"]; reason != "" {
		return exitError{exitMeshError, fmt.Errorf("call %s: the mesh answered %d %s, not the service%s",
			service, resp.Status, reason, meshErrorHint(reason, service))}
	}
	if resp.Status >= 500 {
		return exitError{exitServerError, fmt.Errorf("call %s: the service answered %d", service, resp.Status)}
	}
	return nil
}

// meshErrorHint says what to try for a mesh error reason.
func meshErrorHint(reason, service string) string {
	switch reason {
	case "no-healthy-instances", "no-responders":
		return fmt.Sprintf("\n  try: busmesh services %s (is an adapter for %q running, healthy, on the same broker and mesh?)", service, service)
	case "no-route":
		return "\n  try: busmesh services (which names does the mesh know?)"
	case "timeout":
		return "\n  try: a larger --timeout, or busmesh stats on the adapter's sidecar (is the application slow?)"
	case "app-unreachable":
		return "\n  try: busmesh check --config on the adapter's sidecar (is the application running at adapter.target?)"
	case "broker-unavailable":
		return "\n  try: the sidecar's log (the broker connection is down and being retried)"
	}
	return ""
}
