package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/busmesh/busmesh/broker"
)

// Normalize fills the defaults that depend on other keys: the sidecar ID
// and the adapter's instance name.
func (c *Config) Normalize() {
	if c.ID == "" {
		c.ID = defaultID(c)
	}
	if c.Adapter != nil && c.Adapter.Instance == "" {
		c.Adapter.Instance = c.ID
	}
}

// defaultID is the host name and the port of the first listener, so that it
// is unique on a machine and stable across restarts.
func defaultID(c *Config) string {
	host, _ := os.Hostname()
	host = sanitizeToken(strings.Split(host, ".")[0])
	if host == "" {
		host = "sidecar"
	}
	var addrs []string
	if c.Ambassador != nil {
		addrs = append(addrs, c.Ambassador.HTTP)
		services := make([]string, 0, len(c.Ambassador.Upstreams))
		for s := range c.Ambassador.Upstreams {
			services = append(services, s)
		}
		slices.Sort(services)
		for _, s := range services {
			addrs = append(addrs, c.Ambassador.Upstreams[s])
		}
	}
	addrs = append(addrs, c.Admin)
	for _, a := range addrs {
		if _, port, err := net.SplitHostPort(a); err == nil && port != "0" && port != "" {
			return host + "-" + port
		}
	}
	if c.Adapter != nil && c.Adapter.Service != "" {
		// No fixed port: the process id keeps two such sidecars apart.
		return sanitizeToken(c.Adapter.Service) + "-" + host + "-" + strconv.Itoa(os.Getpid())
	}
	return host + "-" + strconv.Itoa(os.Getpid())
}

func sanitizeToken(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			b[i] = '-'
		}
	}
	return string(b)
}

// Validate reports every problem in c; it returns nil or an *Error.
func (c *Config) Validate() error {
	errs := &Error{File: "(config)", lines: map[string]int{}}
	c.validate(errs)
	if len(errs.Problems) > 0 {
		return errs
	}
	return nil
}

func (c *Config) validate(errs *Error) {
	if err := broker.ValidToken(c.Mesh); err != nil {
		errs.add("mesh", 0, "%v", err)
	}
	if err := broker.ValidToken(c.ID); err != nil {
		errs.add("id", 0, "%v", err)
	}
	checkBroker(errs, c.Broker)
	listeners := map[string]string{} // address -> key, to catch two keys on one port
	checkAddr(errs, listeners, "admin", c.Admin, true)
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		errs.add("log.level", 0, "%q is not a level (allowed: debug, info, warn, error)", c.Log.Level)
	}
	if c.Log.Format != "json" && c.Log.Format != "text" {
		errs.add("log.format", 0, "%q is not a format (allowed: json, text)", c.Log.Format)
	}
	if s := c.Log.Access.Sample; !(s >= 0 && s <= 1) {
		errs.add("log.access.sample", 0, "%v is not a share (allowed: 0 to 1, example: 0.1)", s)
	}
	checkTracing(errs, &c.Tracing)
	if c.Procs < 0 {
		errs.add("procs", 0, "%d must be 0 (every CPU) or more", c.Procs)
	}
	if c.Discovery.Interval < Duration(100*time.Millisecond) {
		errs.add("discovery.interval", 0, "%q is too short (at least 100ms; default 2s)", c.Discovery.Interval.D().String())
	}
	if c.Ambassador == nil && c.Adapter == nil {
		errs.add("(top level)", 0, "no ambassador or adapter section: a sidecar needs at least one")
	}
	if a := c.Ambassador; a != nil {
		if a.Service != "" {
			if err := broker.ValidToken(a.Service); err != nil {
				errs.add("ambassador.service", 0, "%v", err)
			}
		}
		if a.HTTP == "" && len(a.Upstreams) == 0 && a.GRPC == "" {
			errs.add("ambassador", 0, "no listener: set ambassador.http (shared port), ambassador.upstreams (a port per service) or ambassador.grpc")
		}
		checkAddr(errs, listeners, "ambassador.http", a.HTTP, true)
		checkAddr(errs, listeners, "ambassador.grpc", a.GRPC, true)
		for _, prefix := range sortedMapKeys(a.GRPCRoutes) {
			key := "ambassador.grpc_routes." + prefix
			if prefix == "" {
				errs.add(key, 0, "empty method prefix (example: \"shop.orders.v1.\")")
			}
			if err := broker.ValidToken(a.GRPCRoutes[prefix]); err != nil {
				errs.add(key, 0, "service name %v", err)
			}
		}
		for _, svc := range sortedMapKeys(a.Upstreams) {
			key := "ambassador.upstreams." + svc
			if err := broker.ValidToken(svc); err != nil {
				errs.add(key, 0, "service name %v", err)
			}
			checkAddr(errs, listeners, key, a.Upstreams[svc], false)
		}
		if a.Timeout <= 0 {
			errs.add("ambassador.timeout", 0, "%q must be positive (example: \"30s\")", a.Timeout.D().String())
		}
		checkLB(errs, "ambassador.lb", a.LB, false)
		if a.MaxConnections < 0 {
			errs.add("ambassador.max_connections", 0, "%d must be 0 (the default, 2048) or more", a.MaxConnections)
		}
		for _, name := range slices.Sorted(maps.Keys(a.Brokers)) {
			key := "ambassador.brokers." + name
			if err := broker.ValidToken(name); err != nil {
				errs.add(key, 0, "broker name %v", err)
			}
			if name == PrimaryBroker {
				errs.add(key, 0, "the name primary is taken: metrics call the sidecar's own broker so (example: shadow)")
			}
			checkBrokerURL(errs, key, a.Brokers[name])
			if sameBroker(a.Brokers[name], c.Broker) {
				// Its inbox would hear every answer twice, and a split or
				// a mirror there would carry nothing new.
				errs.add(key, 0, "%q is the sidecar's own broker (broker: %q); name another broker, or remove it",
					broker.Redact(a.Brokers[name]), broker.Redact(c.Broker))
			}
		}
		for _, svc := range slices.Sorted(maps.Keys(a.Services)) {
			a.checkService(errs, svc)
		}
	}
	if a := c.Adapter; a != nil {
		if a.Service == "" {
			errs.add("adapter.service", errs.lines["adapter"], "required (the name callers use, example: orders)")
		} else if err := broker.ValidToken(a.Service); err != nil {
			errs.add("adapter.service", 0, "%v (the service name, example: orders)", err)
		}
		if err := broker.ValidToken(a.Instance); err != nil {
			errs.add("adapter.instance", 0, "%v", err)
		}
		if a.Version != "" {
			if err := broker.ValidToken(a.Version); err != nil {
				errs.add("adapter.version", 0, "%v (it names the version's subject, example: v2)", err)
			}
		}
		checkTarget(errs, a.Target, errs.lines["adapter"])
		if a.TLS != nil {
			checkAppTLS(errs, a.TLS, a.Target)
		}
		if a.Host != "" && a.Host != HostCaller && a.Host != HostTarget {
			errs.add("adapter.host", 0, "%q is not a choice (allowed: caller, the caller's Host; target, the target's own)", a.Host)
		}
		if a.Concurrency < 1 {
			errs.add("adapter.concurrency", 0, "%d must be at least 1", a.Concurrency)
		}
		if h := a.Health; h != nil {
			checkHealth(errs, h, a.Target)
		}
		if o := a.Outlier; o != nil {
			checkOutlier(errs, "adapter.outlier", o)
		}
	}
	c.validateSecurity(errs)
}

func checkAddr(errs *Error, seen map[string]string, key, addr string, optional bool) {
	if addr == "" {
		if !optional {
			errs.add(key, 0, "empty address (example: 127.0.0.1:9001)")
		}
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		errs.add(key, 0, "%q is not host:port (example: 127.0.0.1:9001)", addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		errs.add(key, 0, "%q has no valid port (0-65535)", addr)
		return
	}
	if port != "0" {
		if other, dup := seen[addr]; dup {
			errs.add(key, 0, "%q is also %s: each listener needs its own port", addr, other)
		}
		seen[addr] = key
	}
}

// IsGRPCTarget tells whether an adapter target is a gRPC server
// (grpc://, or grpcs:// over TLS).
func IsGRPCTarget(target string) bool {
	s := targetScheme(target)
	return s == "grpc" || s == "grpcs"
}

// targetScheme is target's scheme, lower-cased as url.Parse does ("" if
// none).
func targetScheme(target string) string {
	scheme, _, ok := strings.Cut(target, "://")
	if !ok {
		return ""
	}
	return strings.ToLower(scheme)
}

func checkTarget(errs *Error, target string, sectionLine int) {
	const key = "adapter.target"
	if target == "" {
		errs.add(key, sectionLine, "required (the application, example: http://127.0.0.1:8080 or grpc://127.0.0.1:9090)")
		return
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		errs.add(key, 0, "%q is not an application URL (example: http://127.0.0.1:8080)", target)
		return
	}
	if u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "grpc" && u.Scheme != "grpcs" {
		errs.add(key, 0, "%q has scheme %q (allowed: http, https, grpc, grpcs)", target, u.Scheme)
		return
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			errs.add(key, 0, "%q has no valid port (1-65535)", target)
		}
	}
	if (u.Scheme == "https" || u.Scheme == "grpcs") && u.Hostname() == "" {
		// The host is the name the application's certificate is checked for.
		errs.add(key, 0, "%q names no host, which a TLS application's certificate is checked against (example: https://127.0.0.1:8443)", target)
	}
}

func sortedMapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func checkLB(errs *Error, key, lb string, optional bool) {
	if lb == "" && optional {
		return
	}
	if lb != LBQueue && lb != LBDirect {
		errs.add(key, 0, "%q is not a mode (allowed: queue, direct)", lb)
	}
}

func checkHealth(errs *Error, h *Health, target string) {
	grpcTarget := IsGRPCTarget(target)
	switch {
	case h.HTTP != "" && h.GRPC:
		errs.add("adapter.health", 0, "set http or grpc, not both")
	case h.HTTP == "" && !h.GRPC:
		errs.add("adapter.health", 0, "no check: set http (a path, example: /healthz) or grpc: true")
	case h.HTTP != "" && grpcTarget:
		errs.add("adapter.health.http", 0, "%q: the target is a gRPC server; use grpc: true", h.HTTP)
	case h.HTTP != "" && !strings.HasPrefix(h.HTTP, "/"):
		errs.add("adapter.health.http", 0, "%q is not a path (example: /healthz)", h.HTTP)
	case h.GRPC && !grpcTarget:
		errs.add("adapter.health.grpc", 0, "the target %q is not a gRPC server (grpc:// or grpcs://)", target)
	}
	if h.Interval < Duration(10*time.Millisecond) {
		errs.add("adapter.health.interval", 0, "%q is too short (at least 10ms)", h.Interval.D().String())
	}
	if h.Timeout <= 0 {
		errs.add("adapter.health.timeout", 0, "%q must be positive", h.Timeout.D().String())
	}
	if h.UnhealthyAfter < 1 {
		errs.add("adapter.health.unhealthy_after", 0, "%d must be at least 1", h.UnhealthyAfter)
	}
	if h.HealthyAfter < 1 {
		errs.add("adapter.health.healthy_after", 0, "%d must be at least 1", h.HealthyAfter)
	}
}

// ValidateService checks ambassador.services.<service> as the config file's
// validation does, with the same messages; name labels the error (where
// the change came from). It returns nil or an *Error.
func (a *Ambassador) ValidateService(name, service string) error {
	errs := &Error{File: name, lines: map[string]int{}}
	a.checkService(errs, service)
	if len(errs.Problems) > 0 {
		return errs
	}
	return nil
}

func (a *Ambassador) checkService(errs *Error, svc string) {
	key := "ambassador.services." + svc
	if err := broker.ValidToken(svc); err != nil {
		errs.add(key, 0, "service name %v", err)
	}
	p := a.Services[svc]
	if p == nil {
		return
	}
	checkLB(errs, key+".lb", p.LB, true)
	if p.PreferZone != "" && a.Policy(svc).LB != LBDirect {
		errs.add(key+".prefer_zone", 0, "needs lb: direct (the ambassador picks the instance)")
	}
	if p.Version != "" {
		if err := broker.ValidToken(p.Version); err != nil {
			errs.add(key+".version", 0, "%v (it names a subject, example: v2)", err)
		}
	}
	checkTraffic(errs, key, p)
	if m := p.Mirror; m != nil && m.Broker != "" {
		if _, ok := a.Brokers[m.Broker]; !ok {
			errs.add(key+".mirror.broker", 0, "%q is not in ambassador.brokers (allowed: %s)", m.Broker, allowedNames(a.Brokers))
		}
	}
	a.checkBrokerSplit(errs, key, p)
	checkResilience(errs, key, p, a.Policy(svc).LB == LBDirect)
}

// checkBrokerSplit validates a service's brokers weights: known names and
// percentages adding up to 100.
func (a *Ambassador) checkBrokerSplit(errs *Error, key string, p *ServicePolicy) {
	if len(p.Brokers) == 0 {
		return
	}
	allowed := PrimaryBroker
	if len(a.Brokers) > 0 {
		allowed += ", " + allowedNames(a.Brokers)
	}
	other := "kafka"
	if len(a.Brokers) > 0 {
		other = slices.Sorted(maps.Keys(a.Brokers))[0]
	}
	total, rejected := 0, false
	for _, name := range slices.Sorted(maps.Keys(p.Brokers)) {
		k, w := key+".brokers."+name, p.Brokers[name]
		if _, ok := a.Brokers[name]; !ok && name != PrimaryBroker {
			errs.add(k, 0, "%q is not a broker (allowed: %s; more go in ambassador.brokers)", name, allowed)
			rejected = true
			continue
		}
		if w < 0 || w > 100 {
			errs.add(k, 0, "%d is not a percentage (allowed: 0 to 100)", w)
			rejected = true
			continue
		}
		total += w
	}
	if !rejected && total != 100 { // after a rejected entry the sum would mislead
		errs.add(key+".brokers", 0, "the weights add up to %d (%s), not 100 (example: primary: 90, %s: 10)",
			total, weightList(p.Brokers), other)
	}
}

// checkTraffic validates a service's routes, split and mirror.
func checkTraffic(errs *Error, key string, p *ServicePolicy) {
	version := func(k, v string) {
		if err := broker.ValidToken(v); err != nil {
			errs.add(k, 0, "%v (a version, example: v2)", err)
		}
	}
	for i, r := range p.Routes {
		k := fmt.Sprintf("%s.routes[%d]", key, i)
		version(k+".version", r.Version)
		m := r.Match
		if len(m.Headers) == 0 && m.PathPrefix == "" && m.GRPCMethod == "" && m.Caller == "" {
			errs.add(k+".match", 0, "matches nothing (set headers, path_prefix, grpc_method or caller)")
		}
		if m.PathPrefix != "" && !strings.HasPrefix(m.PathPrefix, "/") {
			errs.add(k+".match.path_prefix", 0, "%q must start with / (example: /beta/)", m.PathPrefix)
		}
		if m.GRPCMethod != "" && !strings.HasPrefix(m.GRPCMethod, "/") {
			errs.add(k+".match.grpc_method", 0, "%q must start with / (example: /shop.Orders/)", m.GRPCMethod)
		}
	}
	total := 0
	for _, v := range slices.Sorted(maps.Keys(p.Split)) {
		version(key+".split."+v, v)
		if w := p.Split[v]; w < 0 {
			errs.add(key+".split."+v, 0, "%d must be 0 or more (a weight)", w)
		} else {
			total += w
		}
	}
	if len(p.Split) > 0 && total == 0 {
		errs.add(key+".split", 0, "the weights add up to 0; give one version a weight")
	}
	if p.Sticky != "" && len(p.Split) == 0 {
		errs.add(key+".sticky", 0, "needs a split to pick from")
	}
	if p.Fallback != "" && p.Fallback != FallbackAny && p.Fallback != FallbackNone {
		errs.add(key+".fallback", 0, "%q is not a fallback (allowed: any, none)", p.Fallback)
	}
	if m := p.Mirror; m != nil {
		if m.Broker == "" || m.Version != "" { // to another broker, the version is optional
			version(key+".mirror.version", m.Version)
		}
		if m.Percent < 0 || m.Percent > 100 {
			errs.add(key+".mirror.percent", 0, "%d must be 0 to 100", m.Percent)
		}
	}
}

// allowedNames lists a map's keys for an error message.
func allowedNames[V any](m map[string]V) string {
	if len(m) == 0 {
		return "none set"
	}
	return strings.Join(slices.Sorted(maps.Keys(m)), ", ")
}

func checkTracing(errs *Error, t *Tracing) {
	if t.Endpoint != "" {
		u, err := url.Parse(t.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.add("tracing.endpoint", 0, "%q is not a collector URL (allowed: http:// or https://, example: http://127.0.0.1:4317)", t.Endpoint)
		}
	}
	if t.Protocol != "grpc" && t.Protocol != "http" {
		errs.add("tracing.protocol", 0, "%q is not a protocol (allowed: grpc, http)", t.Protocol)
	}
	allowed := []string{SamplerParentRatio, SamplerRatio, SamplerAlwaysOn, SamplerAlwaysOff}
	if !slices.Contains(allowed, t.Sampler) {
		errs.add("tracing.sampler", 0, "%q is not a sampler (allowed: %s)", t.Sampler, strings.Join(allowed, ", "))
	}
	if !(t.Ratio >= 0 && t.Ratio <= 1) {
		errs.add("tracing.ratio", 0, "%v is not a share (allowed: 0 to 1, example: 0.1)", t.Ratio)
	}
}
