package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

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
file's contents.`,
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
				req.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			if name, ok := strings.CutPrefix(data, "@"); ok {
				b, err := os.ReadFile(name)
				if err != nil {
					return usageError{err}
				}
				req.Body = b
			} else {
				req.Body = []byte(data)
			}
			return runAdmin(cmd, &f, "call",
				func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.CallResponse, error) {
					return c.Call(ctx, req)
				},
				func(out io.Writer, resp *busmeshv1.CallResponse) error {
					fmt.Fprintf(out, "%d (%v)\n", resp.Status, resp.Duration.AsDuration())
					for _, k := range slices.Sorted(maps.Keys(resp.Headers)) {
						fmt.Fprintf(out, "%s: %s\n", k, resp.Headers[k])
					}
					fmt.Fprintln(out)
					_, err := out.Write(resp.Body)
					return err
				})
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&method, "request", "X", "GET", "HTTP method")
	cmd.Flags().StringVarP(&data, "data", "d", "", "request body, or @FILE")
	cmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "request header 'Name: value' (repeatable)")
	return cmd
}
