package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// printRouting writes each service's traffic rules, one line each.
func printRouting(out io.Writer, services []*busmeshv1.ServiceTraffic) error {
	tw := table(out)
	row(tw, "SERVICE", "LB", "SPLIT", "BROKERS", "ROUTES", "STICKY", "FALLBACK", "MIRROR", "SOURCE")
	for _, s := range services {
		r := s.Rules
		split := splitText(r.GetSplit())
		if s.Version != "" {
			split = "only " + s.Version
		}
		mirror := "-"
		if m := r.GetMirror(); m != nil && m.Percent > 0 {
			to := m.Version
			switch {
			case m.Broker != "" && to == "":
				to = "broker " + m.Broker
			case m.Broker != "":
				to += " on broker " + m.Broker
			}
			mirror = fmt.Sprintf("%d%% to %s", m.Percent, to)
		}
		fallback := r.GetFallback()
		if fallback == "" {
			fallback = "any" // the default
		}
		row(tw, s.Service, s.Lb, split, splitText(r.GetBrokers()), routesText(r.GetRoutes()), dash(r.GetSticky()), fallback, mirror, s.Source)
	}
	return tw.Flush()
}

// splitText is "v1=90 v2=10", versions (or brokers) sorted; "-" for none.
func splitText(split map[string]int32) string {
	if len(split) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(split))
	for _, v := range slices.Sorted(maps.Keys(split)) {
		parts = append(parts, fmt.Sprintf("%s=%d", v, split[v]))
	}
	return strings.Join(parts, " ")
}

// routesText is "x-canary=1 → v2; path /beta/ caller web → v2".
func routesText(routes []*busmeshv1.TrafficRoute) string {
	if len(routes) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(routes))
	for _, r := range routes {
		var m []string
		for _, h := range slices.Sorted(maps.Keys(r.Match.GetHeaders())) {
			m = append(m, h+"="+r.Match.Headers[h])
		}
		if p := r.Match.GetPathPrefix(); p != "" {
			m = append(m, "path "+p)
		}
		if g := r.Match.GetGrpcMethod(); g != "" {
			m = append(m, "method "+g)
		}
		if c := r.Match.GetCaller(); c != "" {
			m = append(m, "caller "+c)
		}
		parts = append(parts, strings.Join(m, " ")+" → "+r.Version)
	}
	return strings.Join(parts, "; ")
}
