package ambassador

import (
	"net"
	"strings"
	"sync"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
)

// route is where a call goes, and how.
type route struct {
	service string
	subject string // broker.ServiceSubject(service), built once
	policy  config.ServicePolicy
}

// routeCache remembers the route of each Host header seen on the shared
// port, so routing a call costs a map read, not string building.
type routeCache struct {
	cfg      *config.Ambassador
	subjects broker.Subjects
	mu  sync.RWMutex
	m   map[string]route
}

// route returns the route to a service by name.
func (rc *routeCache) route(service string) route {
	return route{service: service, subject: rc.subjects.Service(service), policy: rc.cfg.Policy(service)}
}

// maxCachedHosts bounds the cache: Host headers come from clients.
const maxCachedHosts = 4096

// byHost returns the route for a Host header: "orders", "orders.mesh",
// with or without a port. ok is false when the host names no service.
func (rc *routeCache) byHost(host string) (route, bool) {
	rc.mu.RLock()
	r, ok := rc.m[host]
	rc.mu.RUnlock()
	if ok {
		return r, true
	}
	service, ok := serviceFromHost(host)
	if !ok {
		return route{}, false
	}
	r = rc.route(service)
	rc.mu.Lock()
	if len(rc.m) < maxCachedHosts {
		rc.m[host] = r
	}
	rc.mu.Unlock()
	return r, true
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
