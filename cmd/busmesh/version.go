package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/spf13/cobra"

	"github.com/busmesh/busmesh/internal/admin"
)

// cliVersion is this binary's version: the -ldflags one, else the module's.
func cliVersion() string {
	v := version
	if info, ok := debug.ReadBuildInfo(); ok && v == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		v = info.Main.Version
	}
	return v
}

func newVersionCmd() *cobra.Command {
	var addr, output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the busmesh version, and with --admin the running sidecar's",
		Example: `  busmesh version
  busmesh version --admin 127.0.0.1:15000 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usageError{fmt.Errorf("--output %q: want table or json", output)}
			}
			type build struct {
				Version string `json:"version"`
				Go      string `json:"go"`
				OS      string `json:"os"`
				Arch    string `json:"arch"`
			}
			out := struct {
				CLI     build       `json:"cli"`
				Sidecar *admin.Info `json:"sidecar,omitempty"`
			}{CLI: build{cliVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH}}
			if addr != "" {
				info, err := fetchInfo(cmd, addr, 5*time.Second)
				if err != nil {
					return exitError{exitFailed, err}
				}
				out.Sidecar = info
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(w, out)
			}
			fmt.Fprintf(w, "busmesh %s %s %s/%s\n", out.CLI.Version, out.CLI.Go, out.CLI.OS, out.CLI.Arch)
			if s := out.Sidecar; s != nil {
				fmt.Fprintf(w, "sidecar %s at %s: busmesh %s %s, up %v\n", s.Sidecar, addr, s.Version, s.Go,
					(time.Duration(s.UptimeS) * time.Second).Round(time.Second))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "admin", "", "also show the version of the sidecar at this admin address")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// fetchInfo reads GET /info from the admin port at addr.
func fetchInfo(cmd *cobra.Command, addr string, timeout time.Duration) (*admin.Info, error) {
	req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, "http://"+addr+"/info", nil)
	if err != nil {
		return nil, usageError{fmt.Errorf("--admin %q: %w", addr, err)}
	}
	client := &http.Client{Timeout: timeout}
	resp, err := client.Do(req)
	if err != nil {
		return nil, &adminError{what: "sidecar info", addr: addr,
			msg: fmt.Sprintf("no busmesh admin port answers at %s (%s)", addr, dialReason(err.Error())),
			fix: "start the sidecar, or point at one with --admin HOST:PORT (its config's admin: address)"}
	}
	defer resp.Body.Close()
	var info admin.Info
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&info) != nil || info.Sidecar == "" {
		return nil, &adminError{what: "sidecar info", addr: addr,
			msg: fmt.Sprintf("%s answered %s, not a busmesh admin port's /info", addr, resp.Status),
			fix: "--admin must name a busmesh sidecar's admin: address"}
	}
	return &info, nil
}
