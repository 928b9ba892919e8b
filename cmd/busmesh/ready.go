package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
)

// readyAttrs are the addresses the "ready" log line names: where the
// sidecar serves, logged at the moment /readyz turns ready.
func (sc *sidecar) readyAttrs() []any {
	attrs := []any{"broker", broker.Redact(sc.cfg.Broker)}
	if sc.admin != nil {
		attrs = append(attrs, "admin", sc.admin.Addr(), "dashboard", "http://"+sc.admin.Addr()+"/")
	}
	if a := sc.cfg.Ambassador; a != nil && sc.ambassador != nil {
		addrs := sc.ambassador.Addrs()
		if a.HTTP != "" {
			attrs = append(attrs, "http", addrs[0])
			addrs = addrs[1:]
		}
		for i, svc := range slices.Sorted(maps.Keys(a.Upstreams)) {
			attrs = append(attrs, "upstream."+svc, addrs[i])
		}
		if g := sc.ambassador.GRPCAddr(); g != "" {
			attrs = append(attrs, "grpc", g)
		}
	}
	if a := sc.cfg.Adapter; a != nil {
		attrs = append(attrs, "serves", a.Service+"/"+a.Instance, "target", a.Target)
	}
	return attrs
}

// callerName is the identity of the application calling through the
// ambassador: ambassador.service, else the sidecar id.
func callerName(cfg *config.Config) string {
	if cfg.Ambassador != nil && cfg.Ambassador.Service != "" {
		return cfg.Ambassador.Service
	}
	return cfg.ID
}

// refuseDuplicate fails the start when another sidecar on the broker
// already serves this adapter's instance, or uses this sidecar's id.
func refuseDuplicate(ctx context.Context, b broker.Broker, cfg *config.Config, fix string) error {
	if fix == "" {
		fix = fmt.Sprintf("give this one its own adapter.instance (and id), or stop the other; `busmesh services %s` on a caller shows who serves it",
			cfg.Adapter.Service)
	}
	d, err := findDuplicate(ctx, b, cfg.Mesh, cfg.ID, cfg.Adapter.Service, cfg.Adapter.Instance, discoverySettle)
	if err != nil {
		return err
	}
	if d != nil {
		d.fix = fix
		return d
	}
	return nil
}

// startError says which sidecar failed to start, and what to try when the
// error does not say it already.
func startError(cfg *config.Config, err error) error {
	var ce *broker.ConnectError
	var me *mirrorBrokerError
	if errors.As(err, &me) {
		return fmt.Errorf("sidecar %s: %w\n  try: is that broker running? or fix or remove ambassador.brokers.%s (busmesh check --config checks them all)", cfg.ID, err, me.name)
	}
	if errors.As(err, &ce) {
		return fmt.Errorf("sidecar %s: %w\n  try: %s", cfg.ID, err, brokerFix(cfg.Broker, err))
	}
	return fmt.Errorf("sidecar %s: %w", cfg.ID, err)
}
