package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// configPoll is how often a running sidecar looks at its config file.
const configPoll = time.Second

// watchConfig reloads the routing of a running sidecar — services,
// policies, traffic routes, splits and mirrors — when its config file
// changes (looked at every second) or on SIGHUP, until ctx ends. The new
// file is validated whole first: one that does not load leaves the routes
// in force and logs why. Calls in flight keep the routes they started
// with. Other keys (broker, ports, the adapter) take a restart.
func (sc *sidecar) watchConfig(ctx context.Context, file string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(configPoll)
	defer t.Stop()
	last := stamp(file)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		case <-t.C:
			if s := stamp(file); s == last {
				continue
			} else {
				last = s
			}
		}
		sc.reload(file)
	}
}

// stamp is what tells a changed file: its modification time and size.
func stamp(file string) [2]int64 {
	fi, err := os.Stat(file)
	if err != nil {
		return [2]int64{}
	}
	return [2]int64{fi.ModTime().UnixNano(), fi.Size()}
}

// reload loads file and applies its routing.
func (sc *sidecar) reload(file string) {
	cfg, err := config.Load(file)
	if err != nil {
		sc.logger.Error("config reload refused: the routes in force stay", telemetry.KeyErr, err)
		return
	}
	if sc.ambassador == nil || cfg.Ambassador == nil {
		sc.logger.Info("config file changed: nothing to reload without a restart")
		return
	}
	if err := sc.ambassador.Reload(cfg.Ambassador); err != nil {
		sc.logger.Error("config reload refused: the routes in force stay", telemetry.KeyErr, err)
		return
	}
	sc.logger.Info("routes reloaded", "routes_version", sc.ambassador.RoutesVersion())
}
