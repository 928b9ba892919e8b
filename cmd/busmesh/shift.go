package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

func newShiftCmd() *cobra.Command {
	var f adminFlags
	var ifVersion uint64
	cmd := &cobra.Command{
		Use:   "shift SERVICE VERSION=PERCENT...",
		Short: "Change a service's split weights on a running sidecar (canary, blue-green)",
		Long: `Change a service's split weights on a running sidecar, through its admin API.
The weights are percentages of the calls: the versions named get theirs, and
what they leave of 100 goes to the split's other versions in proportion to
their weights now. So, from v1=100:

  busmesh shift orders v2=10       # canary: v1=90 v2=10
  busmesh shift orders v2=100      # blue-green: v1=0 v2=100
  busmesh shift orders v1=100      # and back

The change is validated as the config file is, applies to new calls at once
(calls in flight finish where they were sent) and prints the new routing
table version. Header routes still win over the split. The change stays
over config file reloads until the file changes this service's traffic
rules (then the file wins, and the sidecar logs it); a restart starts from
the file. busmesh routes shows the table and where each rule comes from.

Exit status: 0 changed, 1 could not (no sidecar, no admin token, the table
changed under --if-version), 2 usage (bad arguments, or rules the sidecar
refused as invalid).`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &busmeshv1.ShiftTrafficRequest{Service: args[0], Split: map[string]int32{}, IfVersion: ifVersion}
			for _, a := range args[1:] {
				v, w, ok := strings.Cut(a, "=")
				n, err := strconv.Atoi(w)
				if !ok || v == "" || err != nil {
					return usageError{fmt.Errorf("shift: %q is not VERSION=PERCENT (example: v2=100)", a)}
				}
				if n < 0 || n > 100 {
					return usageError{fmt.Errorf("shift: %q: %d is not a percentage (allowed: 0 to 100)", a, n)}
				}
				if _, dup := req.Split[v]; dup {
					return usageError{fmt.Errorf("shift: version %s given twice", v)}
				}
				req.Split[v] = int32(n)
			}
			c, ctx, done, err := f.client(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.ShiftTraffic(ctx, req)
			if err != nil {
				code := exitFailed
				if status.Code(err) == codes.InvalidArgument {
					code = exitUsage
				}
				return exitError{code, humanize("shift "+args[0], f.addr, "--timeout "+f.timeout.String(), err)}
			}
			if f.output == "json" {
				return writeJSON(cmd.OutOrStdout(), struct {
					Version uint64      `json:"version"`
					Service trafficJSON `json:"service"`
				}{resp.Version, serviceTrafficJSON(resp.Service)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: split %s (routing table version %d)\n",
				args[0], splitText(resp.Service.GetRules().GetSplit()), resp.Version)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().Uint64Var(&ifVersion, "if-version", 0, "change only if the routing table in force has this version (see busmesh routes)")
	return cmd
}
