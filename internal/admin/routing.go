package admin

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/internal/config"
	busmeshv1 "github.com/busmesh/busmesh/proto/busmesh/v1"
)

// Routing is the ambassador's routing table, to read and to change. It
// is safe for concurrent use.
type Routing interface {
	// Routing returns the table's version and each service it names.
	Routing() (uint64, map[string]config.ServiceRouting)
	// ChangeTraffic sets a service's traffic rules to what change makes of
	// the rules in force and the config file's (change runs with changes
	// held off, so it may check the version), validated as the config
	// file's are, and swaps the table. It returns the new table's version,
	// or change's error, or an *config.Error.
	ChangeTraffic(service string, change func(version uint64, now, file config.Traffic) (config.Traffic, error)) (uint64, error)
}

// errStale refuses a change made against another version of the table.
var errStale = errors.New("the routing table changed")

func (a *api) ListRoutes(context.Context, *busmeshv1.ListRoutesRequest) (*busmeshv1.ListRoutesResponse, error) {
	parts := a.s.parts()
	resp := &busmeshv1.ListRoutesResponse{Routes: parts.Routes}
	if parts.Routing == nil {
		return resp, nil
	}
	version, services := parts.Routing.Routing()
	resp.Version = version
	for _, svc := range slices.Sorted(maps.Keys(services)) {
		resp.Services = append(resp.Services, serviceTraffic(svc, services[svc]))
	}
	return resp, nil
}

// SetTraffic replaces a service's traffic rules.
func (a *api) SetTraffic(_ context.Context, req *busmeshv1.SetTrafficRequest) (*busmeshv1.SetTrafficResponse, error) {
	rules := trafficFromPB(req.Rules)
	return a.change(req.Service, req.IfVersion, func(_, _ config.Traffic) (config.Traffic, error) { return rules, nil })
}

// ResetTraffic puts the config file's traffic rules back in force.
func (a *api) ResetTraffic(_ context.Context, req *busmeshv1.ResetTrafficRequest) (*busmeshv1.SetTrafficResponse, error) {
	return a.change(req.Service, req.IfVersion, func(_, file config.Traffic) (config.Traffic, error) { return file, nil })
}

// ShiftTraffic sets a service's split weights, its brokers weights, or
// both, as percentages.
func (a *api) ShiftTraffic(_ context.Context, req *busmeshv1.ShiftTrafficRequest) (*busmeshv1.SetTrafficResponse, error) {
	if len(req.Split) == 0 && len(req.Brokers) == 0 {
		return nil, status.Error(codes.InvalidArgument, "no weights given: set split (example: {v2: 100}) or brokers (example: {kafka: 100})")
	}
	key := "ambassador.services." + req.Service
	return a.change(req.Service, req.IfVersion, func(now, _ config.Traffic) (config.Traffic, error) {
		if len(req.Split) > 0 {
			split, err := config.Shift(key+".split", now.Split, ints(req.Split))
			if err != nil {
				return now, err
			}
			now.Split = split
		}
		if len(req.Brokers) > 0 {
			brokers, err := config.ShiftBrokers(key+".brokers", now.Brokers, ints(req.Brokers))
			if err != nil {
				return now, err
			}
			now.Brokers = brokers
		}
		return now, nil
	})
}

// ints converts a map of weights from the API's.
func ints(m map[string]int32) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = int(v)
	}
	return out
}

// change applies an admin change of a service's traffic rules and answers
// with the service's entry in the new table.
func (a *api) change(service string, ifVersion uint64, change func(now, file config.Traffic) (config.Traffic, error)) (*busmeshv1.SetTrafficResponse, error) {
	routing := a.s.parts().Routing
	if routing == nil {
		return nil, status.Error(codes.FailedPrecondition, "this sidecar has no ambassador: it routes no calls")
	}
	if service == "" {
		return nil, status.Error(codes.InvalidArgument, "service is required")
	}
	version, err := routing.ChangeTraffic(service, func(v uint64, now, file config.Traffic) (config.Traffic, error) {
		if ifVersion != 0 && v != ifVersion {
			return now, fmt.Errorf("%w: version %d is in force, not %d (if_version)", errStale, v, ifVersion)
		}
		return change(now, file)
	})
	var ce *config.Error
	switch {
	case errors.Is(err, errStale):
		return nil, status.Error(codes.Aborted, err.Error())
	case errors.As(err, &ce):
		return nil, status.Errorf(codes.InvalidArgument, "traffic rules of %s refused, the routes in force stay: %v", service, err)
	case err != nil:
		return nil, status.Errorf(codes.Internal, "traffic rules of %s: %v", service, err)
	}
	_, services := routing.Routing()
	return &busmeshv1.SetTrafficResponse{Version: version, Service: serviceTraffic(service, services[service])}, nil
}

func serviceTraffic(service string, r config.ServiceRouting) *busmeshv1.ServiceTraffic {
	source := "file"
	if r.Admin {
		source = "admin"
	}
	return &busmeshv1.ServiceTraffic{Service: service, Lb: r.LB, Version: r.Policy.Version,
		Rules: trafficToPB(r.Policy.Traffic()), Source: source}
}

func trafficToPB(t config.Traffic) *busmeshv1.TrafficRules {
	out := &busmeshv1.TrafficRules{Sticky: t.Sticky, Fallback: t.Fallback}
	if len(t.Split) > 0 {
		out.Split = map[string]int32{}
		for v, w := range t.Split {
			out.Split[v] = int32(w)
		}
	}
	if len(t.Brokers) > 0 {
		out.Brokers = map[string]int32{}
		for b, w := range t.Brokers {
			out.Brokers[b] = int32(w)
		}
	}
	for _, r := range t.Routes {
		out.Routes = append(out.Routes, &busmeshv1.TrafficRoute{Version: r.Version, Match: &busmeshv1.TrafficMatch{
			Headers: r.Match.Headers, PathPrefix: r.Match.PathPrefix, GrpcMethod: r.Match.GRPCMethod, Caller: r.Match.Caller}})
	}
	if m := t.Mirror; m != nil {
		out.Mirror = &busmeshv1.TrafficMirror{Version: m.Version, Percent: int32(m.Percent), Broker: m.Broker}
	}
	return out
}

func trafficFromPB(r *busmeshv1.TrafficRules) config.Traffic {
	t := config.Traffic{Sticky: r.GetSticky(), Fallback: r.GetFallback()}
	if len(r.GetSplit()) > 0 {
		t.Split = map[string]int{}
		for v, w := range r.GetSplit() {
			t.Split[v] = int(w)
		}
	}
	if len(r.GetBrokers()) > 0 {
		t.Brokers = ints(r.GetBrokers())
	}
	for _, rt := range r.GetRoutes() {
		m := rt.GetMatch()
		t.Routes = append(t.Routes, config.TrafficRoute{Version: rt.GetVersion(), Match: config.TrafficMatch{
			Headers: maps.Clone(m.GetHeaders()), PathPrefix: m.GetPathPrefix(), GRPCMethod: m.GetGrpcMethod(), Caller: m.GetCaller()}})
	}
	if m := r.GetMirror(); m != nil {
		t.Mirror = &config.Mirror{Version: m.GetVersion(), Percent: int(m.GetPercent()), Broker: m.GetBroker()}
	}
	return t
}
