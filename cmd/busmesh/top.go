package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

func newTopCmd() *cobra.Command {
	var f adminFlags
	var every time.Duration
	var once bool
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show a sidecar's live traffic per service and per edge",
		Long: `Show what a sidecar carries now, refreshed every second: per service and per
edge (caller → service), requests per second, success rate (answers not in the
5xx class), p50 and p99 latency over the sidecar's sliding window, and calls
in flight. The ambassador side is the calls the sidecar's applications make;
the adapter side is the calls its service serves. Works against any sidecar's
admin port; Ctrl-C ends it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if every < 100*time.Millisecond {
				return usageError{fmt.Errorf("--interval %v: want at least 100ms", every)}
			}
			c, _, done, err := f.client(cmd)
			if err != nil {
				return err
			}
			defer done()
			out := cmd.OutOrStdout()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
				resp, err := c.GetTraffic(ctx, &busmeshv1.GetTrafficRequest{})
				cancel()
				if err != nil {
					return exitError{exitFailed, humanize("traffic", f.addr, "--timeout "+f.timeout.String(), err)}
				}
				if f.output == "json" {
					if err := writeJSON(out, resp); err != nil {
						return err
					}
				} else {
					if !once {
						fmt.Fprint(out, "\033[H\033[2J") // home, clear: the next frame
					}
					if err := printTraffic(out, resp, time.Now()); err != nil {
						return err
					}
				}
				if once {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-tick.C:
				}
			}
		},
	}
	f.register(cmd)
	cmd.Flags().DurationVar(&every, "interval", time.Second, "time between refreshes")
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	return cmd
}

// printTraffic writes one frame of `busmesh top`: the services, then the
// edges, each side under its own heading.
func printTraffic(out io.Writer, resp *busmeshv1.GetTrafficResponse, now time.Time) error {
	fmt.Fprintf(out, "sidecar %s · last %v · %s\n\n", resp.Sidecar, resp.Window.AsDuration(), now.Format("15:04:05"))
	if len(resp.Edges) == 0 {
		fmt.Fprintln(out, "no traffic yet")
		return nil
	}
	tw := table(out)
	row(tw, "SIDE", "SERVICE", "REQ/S", "SUCCESS", "P50", "P99", "INFLIGHT")
	for _, s := range resp.Services {
		row(tw, s.Side, s.Service, rate(s.Rate), percent(s.SuccessRate, s.Requests), humanPB(s.P50), humanPB(s.P99), s.Inflight)
	}
	row(tw)
	row(tw, "SIDE", "EDGE", "REQ/S", "SUCCESS", "P50", "P99", "INFLIGHT")
	for _, e := range resp.Edges {
		row(tw, e.Side, e.Caller+" → "+e.Service, rate(e.Rate), percent(e.SuccessRate, e.Requests), humanPB(e.P50), humanPB(e.P99), e.Inflight)
	}
	return tw.Flush()
}
