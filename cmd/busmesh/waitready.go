package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newWaitReadyCmd() *cobra.Command {
	var (
		addrs, services []string
		timeout         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait-ready",
		Short: "Wait until sidecars say they are ready (their /readyz), for scripts",
		Long: `Wait until each sidecar at --admin answers ready on /readyz: its broker is
connected, its ports are open and, for an ambassador, discovery has heard
from the mesh. With --service, also wait until each sidecar's discovery
knows a healthy instance of each named service (the adapter is up and its
application passes its health check). A script that starts sidecars in the
background runs this before its first call.

Exit status: 0 when all are ready, 1 when one is not within --timeout.`,
		Example: `  busmesh sidecar --config callee.yaml &
  busmesh sidecar --config caller.yaml &
  busmesh wait-ready --admin 127.0.0.1:15000 --service hello`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := &waiter{cmd: cmd, start: time.Now(), deadline: time.Now().Add(timeout), timeout: timeout,
				client: &http.Client{Timeout: time.Second}}
			for _, addr := range addrs {
				if err := w.until("ready: "+addr, "not ready", addr, w.ready(addr)); err != nil {
					return err
				}
				for _, svc := range services {
					if err := w.until(addr+" knows a healthy instance of "+svc, "knows no healthy instance of "+svc, addr, w.knows(addr, svc)); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&addrs, "admin", []string{"127.0.0.1:15000"}, "a sidecar's admin address (repeatable)")
	cmd.Flags().StringArrayVar(&services, "service", nil, "also wait until the sidecar knows a healthy instance of this service (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for all of them")
	return cmd
}

// waiter polls conditions until they hold or its deadline passes.
type waiter struct {
	cmd             *cobra.Command
	start, deadline time.Time
	timeout         time.Duration
	client          *http.Client
}

// until polls cond every 50ms; cond says whether it holds, and if not, why.
// It prints done when cond holds, and fails saying the sidecar at addr
// "notYet" when the deadline passes.
func (w *waiter) until(done, notYet, addr string, cond func() (bool, string)) error {
	for {
		ok, why := cond()
		if ok {
			fmt.Fprintf(w.cmd.OutOrStdout(), "%s (after %v)\n", done, time.Since(w.start).Round(10*time.Millisecond))
			return nil
		}
		if time.Now().After(w.deadline) {
			return exitError{exitFailed, fmt.Errorf("sidecar at %s %s after %v: %s\n  try: the sidecar's log (did it exit? is its broker reachable?), or busmesh check --config FILE",
				addr, notYet, w.timeout, why)}
		}
		select {
		case <-w.cmd.Context().Done():
			return w.cmd.Context().Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (w *waiter) get(addr, path string) (int, []byte, error) {
	resp, err := w.client.Get("http://" + addr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// ready holds when the sidecar's /readyz answers 200.
func (w *waiter) ready(addr string) func() (bool, string) {
	return func() (bool, string) {
		code, body, err := w.get(addr, "/readyz")
		if err != nil {
			return false, dialReason(err.Error())
		}
		return code == http.StatusOK, fmt.Sprintf("/readyz answers %d %s", code, strings.TrimSpace(string(body)))
	}
}

// knows holds when the sidecar's discovery knows a healthy instance of
// service.
func (w *waiter) knows(addr, service string) func() (bool, string) {
	return func() (bool, string) {
		code, body, err := w.get(addr, "/v1/services?service="+url.QueryEscape(service))
		if err != nil {
			return false, dialReason(err.Error())
		}
		var resp struct {
			Services []struct {
				Healthy int `json:"healthy"`
			} `json:"services"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &resp) != nil {
			return false, fmt.Sprintf("/v1/services answers %d", code)
		}
		if len(resp.Services) == 0 {
			return false, fmt.Sprintf("discovery knows no instance of %s (is its adapter running, on the same broker and mesh?)", service)
		}
		return resp.Services[0].Healthy > 0, fmt.Sprintf("no instance of %s is healthy (is its application up and passing its health check?)", service)
	}
}
