package ambassador

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
)

// Route is where a call goes, and how. Routes are compiled with their
// table and never change; a new table brings new routes.
type Route struct {
	// Service is the target service.
	Service string
	// Subject is where calls go in queue mode: the service's queue group,
	// or its version's when the policy names one.
	Subject string
	// Policy is how calls to the service are balanced.
	Policy config.ServicePolicy

	traffic *traffic // routes, split and mirror; nil when none
}

// direct reports whether the ambassador picks the instance.
func (r *Route) direct() bool { return r.Policy.LB == config.LBDirect }

// prefixRoute is one ambassador.grpc_routes entry.
type prefixRoute struct {
	prefix string
	route  *Route
}

// table is the routing in force: compiled from config into an immutable
// value, held by the Ambassador behind an atomic pointer and replaced
// whole, so a call keeps the table it started with. Only the cache of
// Host headers fills in as calls come.
type table struct {
	version  uint64
	cfg      *config.Ambassador
	subjects broker.Subjects
	mirrors  map[string]*mirrorSender // by ambassador.brokers name; "" the own broker
	lanes    map[string]*lane         // by brokers weights name; primary the own broker
	services map[string]*Route        // every service the config names
	prefixes []prefixRoute            // grpc_routes, longest prefix first

	mu    sync.RWMutex
	hosts map[string]*Route // Host or :authority → route
}

// compile builds the table of cfg. It fails on what config validation lets
// through but routing cannot use.
func compile(cfg *config.Ambassador, subjects broker.Subjects, mirrors map[string]*mirrorSender, lanes map[string]*lane, version uint64) (*table, error) {
	t := &table{version: version, cfg: cfg, subjects: subjects, mirrors: mirrors, lanes: lanes, services: map[string]*Route{}, hosts: map[string]*Route{}}
	for _, svc := range slices.Sorted(maps.Keys(cfg.Services)) {
		p := cfg.Services[svc]
		if p == nil {
			continue
		}
		if p.Mirror != nil && p.Mirror.Broker != "" && mirrors[p.Mirror.Broker] == nil {
			return nil, fmt.Errorf("ambassador.services.%s.mirror.broker: %q is not a broker this sidecar opened at start (ambassador.brokers takes a restart)", svc, p.Mirror.Broker)
		}
		for _, name := range slices.Sorted(maps.Keys(p.Brokers)) {
			if lanes[name] == nil {
				return nil, fmt.Errorf("ambassador.services.%s.brokers.%s: %q is not a broker this sidecar opened at start (allowed: %s; ambassador.brokers takes a restart)",
					svc, name, name, strings.Join(slices.Sorted(maps.Keys(lanes)), ", "))
			}
		}
	}
	add := func(service string) (*Route, error) {
		if err := broker.ValidToken(service); err != nil {
			return nil, fmt.Errorf("service name %v", err)
		}
		if r := t.services[service]; r != nil {
			return r, nil
		}
		r := t.newRoute(service)
		t.services[service] = r
		return r, nil
	}
	for svc := range cfg.Upstreams {
		if _, err := add(svc); err != nil {
			return nil, err
		}
	}
	for svc := range cfg.Services {
		if _, err := add(svc); err != nil {
			return nil, err
		}
	}
	for prefix, svc := range cfg.GRPCRoutes {
		r, err := add(svc)
		if err != nil {
			return nil, err
		}
		t.prefixes = append(t.prefixes, prefixRoute{prefix, r})
	}
	slices.SortFunc(t.prefixes, func(a, b prefixRoute) int {
		return cmp.Or(cmp.Compare(len(b.prefix), len(a.prefix)), cmp.Compare(a.prefix, b.prefix))
	})
	return t, nil
}

func (t *table) newRoute(service string) *Route {
	p := t.cfg.Policy(service)
	subject := t.subjects.Service(service)
	if p.Version != "" {
		subject = t.subjects.Version(service, p.Version)
	}
	return &Route{Service: service, Subject: subject, Policy: p, traffic: compileTraffic(service, p, t.subjects, t.mirrors, t.lanes)}
}

// serviceNames returns the services the config names.
func (t *table) serviceNames() []string { return slices.Sorted(maps.Keys(t.services)) }

// route returns the route to a service the config names, or nil.
func (t *table) route(service string) *Route { return t.services[service] }

// maxCachedHosts bounds the cache: Host headers come from clients.
const maxCachedHosts = 4096

// byHost returns the route for a Host header or :authority: "orders",
// "orders.mesh", with or without a port. ok is false when the host names
// no service.
func (t *table) byHost(host string) (*Route, bool) {
	t.mu.RLock()
	r, ok := t.hosts[host]
	t.mu.RUnlock()
	if ok {
		return r, true
	}
	service, ok := serviceFromHost(host)
	if !ok {
		return nil, false
	}
	if r = t.services[service]; r == nil {
		r = t.newRoute(service)
	}
	t.mu.Lock()
	if len(t.hosts) < maxCachedHosts {
		t.hosts[host] = r
	}
	t.mu.Unlock()
	return r, true
}

// byMethod returns the route of the longest grpc_routes prefix of a full
// gRPC method ("/pkg.Svc/Method").
func (t *table) byMethod(method string) (*Route, bool) {
	m := strings.TrimPrefix(method, "/")
	for _, p := range t.prefixes {
		if strings.HasPrefix(m, p.prefix) {
			return p.route, true
		}
	}
	return nil, false
}

// serviceFromHost takes the service name out of a Host header.
func serviceFromHost(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(host), "."), ".mesh")
	if broker.ValidToken(host) != nil || net.ParseIP(host) != nil {
		return "", false
	}
	return host, true
}
