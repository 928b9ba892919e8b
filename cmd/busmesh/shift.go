package main

import (
	"context"
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
	var reset bool
	cmd := &cobra.Command{
		Use:   "shift SERVICE [VERSION=PERCENT | broker:NAME=PERCENT]... | shift SERVICE --reset",
		Short: "Change a service's split or broker weights on a running sidecar (canary, blue-green, broker migration)",
		Long: `Change a service's split weights on a running sidecar, through its admin API.
The weights are percentages of the calls: the versions named get theirs, and
what they leave of 100 goes to the split's other versions in proportion to
their weights now. So, from v1=100:

  busmesh shift orders v2=10       # canary: v1=90 v2=10
  busmesh shift orders v2=100      # blue-green: v1=0 v2=100
  busmesh shift orders v1=100      # and back

broker:NAME=PERCENT shifts the service's calls between brokers the same way
(NAME is primary, the sidecar's own broker, or an ambassador.brokers name):
calls there are real calls, answered to the caller.

  busmesh shift orders broker:kafka=10    # canary: primary=90 kafka=10
  busmesh shift orders broker:kafka=100   # cut over: every new call on kafka
  busmesh shift orders broker:primary=100 # and back

The change is validated as the config file is, applies to new calls at once
(calls in flight finish where they were sent) and prints the new routing
table version. Header routes still win over the split. The change stays
over config file reloads until the file changes this service's traffic
rules (then the file wins, and the sidecar logs it); a restart starts from
the file. --reset drops the admin change: the file's rules are in force
again. busmesh routes shows the table and where each rule comes from.

Several sidecars (each caller's has its own table): --admin A,B,C changes
each in turn, goes on past one that fails, and says which did what.

Exit status: 0 changed (on every sidecar), 1 could not (no sidecar, no
admin token, the table changed under --if-version), 2 usage (bad
arguments, or rules the sidecar refused as invalid).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			addrs := strings.Split(f.addr, ",")
			if len(addrs) > 1 && ifVersion != 0 {
				return usageError{fmt.Errorf("shift: --if-version takes one --admin address (each sidecar's table has its own version)")}
			}
			switch {
			case reset && len(args) > 1:
				return usageError{fmt.Errorf("shift: --reset takes no weights (usage: busmesh shift SERVICE --reset)")}
			case reset:
				rr := &busmeshv1.ResetTrafficRequest{Service: args[0], IfVersion: ifVersion}
				return shiftAll(cmd, &f, addrs, args[0], func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.SetTrafficResponse, error) {
					return c.ResetTraffic(ctx, rr)
				})
			case len(args) < 2:
				return usageError{fmt.Errorf("shift: no weights (usage: busmesh shift SERVICE VERSION=PERCENT..., example: v2=100; or --reset)")}
			}
			req := &busmeshv1.ShiftTrafficRequest{Service: args[0], IfVersion: ifVersion}
			for _, a := range args[1:] {
				v, w, ok := strings.Cut(a, "=")
				n, err := strconv.Atoi(w)
				name, isBroker := strings.CutPrefix(v, "broker:")
				if !ok || name == "" || err != nil {
					return usageError{fmt.Errorf("shift: %q is not VERSION=PERCENT or broker:NAME=PERCENT (example: v2=100, broker:kafka=10)", a)}
				}
				if n < 0 || n > 100 {
					return usageError{fmt.Errorf("shift: %q: %d is not a percentage (allowed: 0 to 100)", a, n)}
				}
				weights, what := &req.Split, "version"
				if isBroker {
					weights, what = &req.Brokers, "broker"
				}
				if *weights == nil {
					*weights = map[string]int32{}
				}
				if _, dup := (*weights)[name]; dup {
					return usageError{fmt.Errorf("shift: %s %s given twice", what, name)}
				}
				(*weights)[name] = int32(n)
			}
			return shiftAll(cmd, &f, addrs, args[0], func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.SetTrafficResponse, error) {
				return c.ShiftTraffic(ctx, req)
			})
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&reset, "reset", false, "drop the admin change: the config file's traffic rules are in force again")
	cmd.Flags().Uint64Var(&ifVersion, "if-version", 0, "change only if the routing table in force has this version (see busmesh routes)")
	return cmd
}

// shiftResult is one sidecar's outcome, for -o json.
type shiftResult struct {
	Admin   string       `json:"admin"`
	Version uint64       `json:"version,omitempty"`
	Service *trafficJSON `json:"service,omitempty"`
	Error   string       `json:"error,omitempty"`
}

// shiftAll shifts on each sidecar in turn, going on past failures, and
// exits with the worst outcome: usage (a refused rule) over failure.
func shiftAll(cmd *cobra.Command, f *adminFlags, addrs []string, service string,
	call func(context.Context, busmeshv1.AdminClient) (*busmeshv1.SetTrafficResponse, error)) error {
	out := cmd.OutOrStdout()
	var results []shiftResult
	code := exitOK
	var last error
	for _, addr := range addrs {
		g := *f
		g.addr = strings.TrimSpace(addr)
		c, ctx, done, err := g.client(cmd)
		if err != nil {
			return err
		}
		resp, err := call(ctx, c)
		done()
		if err != nil {
			last = humanize("shift "+service, g.addr, "--timeout "+g.timeout.String(), err)
			if status.Code(err) == codes.InvalidArgument {
				code = exitUsage
			} else if code == exitOK {
				code = exitFailed
			}
			results = append(results, shiftResult{Admin: g.addr, Error: last.Error()})
			if len(addrs) > 1 {
				fmt.Fprintf(cmd.ErrOrStderr(), "busmesh: %s: %v\n", g.addr, last)
			}
			continue
		}
		svc := serviceTrafficJSON(resp.Service)
		results = append(results, shiftResult{Admin: g.addr, Version: resp.Version, Service: &svc})
		if f.output == "json" {
			continue
		}
		prefix := ""
		if len(addrs) > 1 {
			prefix = g.addr + ": "
		}
		rules := resp.Service.GetRules()
		weights := "split " + splitText(rules.GetSplit())
		if b := rules.GetBrokers(); len(b) > 0 && len(rules.GetSplit()) == 0 {
			weights = "brokers " + splitText(b)
		} else if len(b) > 0 {
			weights += ", brokers " + splitText(b)
		}
		fmt.Fprintf(out, "%s%s: %s (routing table version %d)\n", prefix, service, weights, resp.Version)
	}
	// -o json: one sidecar's answer as an object (nothing when it failed,
	// as other verbs), several as a list with each one's error.
	if f.output == "json" && (len(addrs) > 1 || code == exitOK) {
		var v any = results
		if len(addrs) == 1 {
			v = struct {
				Version uint64       `json:"version"`
				Service *trafficJSON `json:"service"`
			}{results[0].Version, results[0].Service}
		}
		if err := writeJSON(out, v); err != nil {
			return err
		}
	}
	switch {
	case code == exitOK:
		return nil
	case len(addrs) == 1:
		return exitError{code, last}
	default:
		return exitError{code, fmt.Errorf("shift %s: not done on every sidecar (see above)", service)}
	}
}
