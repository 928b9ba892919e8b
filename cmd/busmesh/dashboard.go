package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/spf13/cobra"
)

func newDashboardCmd() *cobra.Command {
	var (
		addr   string
		noOpen bool
	)
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Open a sidecar's dashboard in the browser",
		Long: `Print the URL of the dashboard a sidecar's admin port serves, and open it in
the browser (xdg-open, or open on macOS) unless --no-open. The dashboard
shows the services and instances discovery knows, requests/s, success rate
and p99 per edge over a sliding window, the broker connection and recent
mesh errors by reason, updated every second.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, err := fetchInfo(cmd, addr, 5*time.Second)
			if err != nil {
				return exitError{exitFailed, err}
			}
			url := "http://" + addr + "/"
			fmt.Fprintf(cmd.OutOrStdout(), "dashboard of sidecar %s: %s\n", info.Sidecar, url)
			if noOpen {
				return nil
			}
			if err := openBrowser(cmd.Context(), url); err != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "(could not open a browser: %v; open the URL above)\n", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "127.0.0.1:15000", "the sidecar's admin address")
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "only print the URL")
	return cmd
}

// openBrowser asks the desktop to open url and waits (briefly) for the
// opener to hand it over.
func openBrowser(ctx context.Context, url string) error {
	opener := "xdg-open"
	if runtime.GOOS == "darwin" {
		opener = "open"
	} else if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return fmt.Errorf("no desktop session (DISPLAY is not set)")
	}
	path, err := exec.LookPath(opener)
	if err != nil {
		return fmt.Errorf("%s is not installed", opener)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, path, url).Run()
}
