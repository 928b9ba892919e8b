package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// adminFlags are the flags of the verbs that talk to a sidecar's admin API.
type adminFlags struct {
	addr    string
	output  string
	timeout time.Duration
	// wait is the client's own deadline when longer than --timeout: call
	// waits past the mesh's deadline for the mesh's timeout answer.
	wait time.Duration
}

// deadline is how long the client waits for the sidecar.
func (f *adminFlags) deadline() time.Duration { return max(f.timeout, f.wait) }

func (f *adminFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.addr, "admin", "127.0.0.1:15000", "the sidecar's admin address")
	cmd.Flags().StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 10*time.Second, "how long to wait for the answer")
}

// client connects to the admin API and returns it with a context bounded
// by --timeout (call: see wait). Answers are at most the gRPC default of
// 4 MiB; the sidecar keeps call's under it (admin.MaxCallAnswer).
func (f *adminFlags) client(cmd *cobra.Command) (busmeshv1.AdminClient, context.Context, func(), error) {
	if f.output != "table" && f.output != "json" {
		return nil, nil, nil, usageError{fmt.Errorf("--output %q: want table or json", f.output)}
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), adminToken())
	if err != nil {
		return nil, nil, nil, usageError{fmt.Errorf("--admin %q: %w", f.addr, err)}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.deadline())
	return busmeshv1.NewAdminClient(conn), ctx, func() { cancel(); conn.Close() }, nil
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func row(tw *tabwriter.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(tw, strings.Join(s, "\t"))
}

// runAdmin makes one Admin API call and prints its answer: view(resp) as
// JSON with -o json, else with table. A failed call is said for people
// (humanize).
func runAdmin[T proto.Message](cmd *cobra.Command, f *adminFlags, what string,
	call func(context.Context, busmeshv1.AdminClient) (T, error), table func(io.Writer, T) error, view func(T) any) error {
	c, ctx, done, err := f.client(cmd)
	if err != nil {
		return err
	}
	defer done()
	resp, err := call(ctx, c)
	if err != nil {
		within := "--timeout " + f.timeout.String()
		if f.wait > f.timeout {
			within = fmt.Sprintf("%v (the call's deadline in the mesh and %v to spare)", f.wait, f.wait-f.timeout)
		}
		return exitError{exitFailed, humanize(what, f.addr, within, err)}
	}
	if f.output == "json" {
		return writeJSON(cmd.OutOrStdout(), view(resp))
	}
	return table(cmd.OutOrStdout(), resp)
}

// noAmbassadorHint explains an empty answer from a sidecar without an
// ambassador: only an ambassador keeps a view of the mesh.
func noAmbassadorHint(cmd *cobra.Command, f *adminFlags, out io.Writer) {
	c, ctx, done, err := f.client(cmd)
	if err != nil {
		return
	}
	defer done()
	h, err := c.GetHealth(ctx, &busmeshv1.GetHealthRequest{})
	if err != nil || h.Components["ambassador"] != "" {
		return
	}
	fmt.Fprintf(out, "\nsidecar %s at %s runs no ambassador, so it keeps no view of the mesh (only ambassadors watch discovery).\n"+
		"Ask a sidecar with an ambassador section: busmesh services --admin HOST:PORT\n", h.Sidecar, f.addr)
}

func newServicesCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "services [SERVICE]",
		Short: "List the services a sidecar's discovery knows, with their instances",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &busmeshv1.ListServicesRequest{}
			if len(args) == 1 {
				req.Service = args[0]
			}
			var security string
			return runAdmin(cmd, &f, "list services",
				func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.ListServicesResponse, error) {
					security = securityState(ctx, c)
					return c.ListServices(ctx, req)
				},
				func(out io.Writer, resp *busmeshv1.ListServicesResponse) error {
					tw := table(out)
					// The CONFLICT column shows only when two live sidecars
					// claim one instance id.
					conflicts := false
					for _, s := range resp.Services {
						for _, in := range s.Instances {
							conflicts = conflicts || in.Conflict != ""
						}
					}
					head := []any{"SERVICE", "INSTANCE", "VERSION", "ZONE", "HEALTHY", "INFLIGHT", "P50", "LAST SEEN"}
					if conflicts {
						head = append(head, "CONFLICT")
					}
					row(tw, head...)
					for _, s := range resp.Services {
						for _, in := range s.Instances {
							healthy := "no"
							if in.Healthy {
								healthy = "yes"
							}
							cols := []any{s.Name, in.Name, dash(in.Version), dash(in.Zone), healthy,
								fmt.Sprintf("%d/%d", in.Inflight, in.Concurrency), humanPB(in.P50),
								time.Since(in.LastSeen.AsTime()).Round(100*time.Millisecond).String() + " ago"}
							if conflicts {
								cols = append(cols, dash(in.Conflict))
							}
							row(tw, cols...)
						}
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					if len(resp.Services) == 0 {
						noAmbassadorHint(cmd, &f, out)
					}
					return printSecurity(out, security)
				}, servicesJSON)
		},
	}
	f.register(cmd)
	return cmd
}

func newStatsCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show a sidecar's traffic per service: totals and recent rates",
		Long: `Show a sidecar's traffic per service: since start, the requests, their codes,
the mesh's errors and the latency quantiles; over the recent window (see
busmesh top), requests per second and the success rate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var traffic *busmeshv1.GetTrafficResponse
			return runAdmin(cmd, &f, "stats",
				func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.GetStatsResponse, error) {
					var err error
					if traffic, err = c.GetTraffic(ctx, &busmeshv1.GetTrafficRequest{}); err != nil {
						return nil, err
					}
					return c.GetStats(ctx, &busmeshv1.GetStatsRequest{})
				},
				func(out io.Writer, resp *busmeshv1.GetStatsResponse) error {
					return printStats(out, resp, traffic)
				}, statsJSON)
		},
	}
	f.register(cmd)
	return cmd
}

// printStats writes the stats table: lifetime figures, and the recent
// window's rate and success rate of each service.
func printStats(out io.Writer, resp *busmeshv1.GetStatsResponse, traffic *busmeshv1.GetTrafficResponse) error {
	recent := map[string]*busmeshv1.EdgeTraffic{}
	for _, s := range traffic.GetServices() {
		recent[s.Side+"/"+s.Service] = s
	}
	window := traffic.GetWindow().AsDuration()
	fmt.Fprintf(out, "sidecar %s, up %v\n\n", resp.Sidecar, resp.Uptime.AsDuration().Round(time.Second))
	tw := table(out)
	row(tw, "SIDE", "SERVICE", "REQUESTS", "CODES", "MESH ERRORS", "P50", "P99",
		fmt.Sprintf("REQ/S (%v)", window), fmt.Sprintf("SUCCESS (%v)", window))
	for _, side := range []struct {
		name  string
		stats []*busmeshv1.ServiceStats
	}{{"ambassador", resp.Ambassador}, {"adapter", resp.Adapter}} {
		for _, s := range side.stats {
			rps, success := "0", "-"
			if r := recent[side.name+"/"+s.Service]; r != nil {
				rps, success = rate(r.Rate), percent(r.SuccessRate, r.Requests)
			}
			row(tw, side.name, s.Service, s.Requests, counts(s.Codes), counts(s.Errors), humanPB(s.P50), humanPB(s.P99), rps, success)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Discovery's rejection counters exist at zero from the start, and the
	// sidecar reports them all; the line is for the ones that happened.
	rejected := make(map[string]uint64, len(resp.Rejected))
	for why, n := range resp.Rejected {
		if n > 0 {
			rejected[why] = n
		}
	}
	if len(rejected) > 0 {
		fmt.Fprintf(out, "\nrejected envelopes: %s\n", counts(rejected))
	}
	return nil
}

func newRoutesCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "Show how a sidecar's ports lead to services, and the routing table in force with its version",
		Long: `Show how a sidecar's ports lead to services, then the routing table in
force: its version (one more at every reload or admin change) and each
service's traffic rules (split, routes, sticky, fallback, mirror), with
where they come from: the config file, or an admin change (busmesh shift).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, &f, "routes",
				func(ctx context.Context, c busmeshv1.AdminClient) (*busmeshv1.ListRoutesResponse, error) {
					return c.ListRoutes(ctx, &busmeshv1.ListRoutesRequest{})
				},
				func(out io.Writer, resp *busmeshv1.ListRoutesResponse) error {
					tw := table(out)
					row(tw, "KIND", "LISTEN", "MATCH", "SERVICE", "TARGET")
					for _, r := range resp.Routes {
						row(tw, r.Kind, dash(r.Listen), dash(r.Match), r.Service, dash(r.Target))
					}
					if err := tw.Flush(); err != nil {
						return err
					}
					if resp.Version == 0 {
						return nil // no ambassador: no routing table
					}
					fmt.Fprintf(out, "\nrouting table version %d\n", resp.Version)
					return printRouting(out, resp.Services)
				}, routesJSON)
		},
	}
	f.register(cmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// counts formats a count map as "200=5 503=1", keys sorted.
func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
