package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newWaitReadyCmd() *cobra.Command {
	var (
		addrs   []string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait-ready",
		Short: "Wait until sidecars say they are ready (their /readyz), for scripts",
		Long: `Wait until each sidecar at --admin answers ready on /readyz: its broker is
connected, its ports are open and, for an ambassador, discovery has heard
from the mesh. A script that starts sidecars in the background runs this
before its first call.

Exit status: 0 when all are ready, 1 when one is not within --timeout.`,
		Example: `  busmesh sidecar --config callee.yaml &
  busmesh sidecar --config caller.yaml &
  busmesh wait-ready --admin 127.0.0.1:15100 --admin 127.0.0.1:15000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			deadline := start.Add(timeout)
			client := &http.Client{Timeout: time.Second}
			for _, addr := range addrs {
				last := "no answer yet"
				for {
					resp, err := client.Get("http://" + addr + "/readyz")
					if err == nil {
						body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
						resp.Body.Close()
						if resp.StatusCode == http.StatusOK {
							fmt.Fprintf(cmd.OutOrStdout(), "ready: %s (after %v)\n", addr, time.Since(start).Round(10*time.Millisecond))
							break
						}
						last = fmt.Sprintf("/readyz answers %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
					} else {
						last = dialReason(err.Error())
					}
					if time.Now().After(deadline) {
						return exitError{exitFailed, fmt.Errorf("sidecar at %s not ready after %v: %s\n  try: the sidecar's log (did it exit? is its broker reachable?), or busmesh check --config FILE",
							addr, timeout, last)}
					}
					select {
					case <-cmd.Context().Done():
						return cmd.Context().Err()
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&addrs, "admin", []string{"127.0.0.1:15000"}, "a sidecar's admin address (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for all of them")
	return cmd
}
