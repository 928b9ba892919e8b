package config

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/identity"
)

// Identity names the files of a sidecar's certified identity, made by
// `busmesh ca issue SERVICE`; replacing them rotates it without a restart.
type Identity struct {
	// Cert is the service certificate (PEM).
	Cert string `yaml:"cert"`
	// Key is the file of its private keys (PEM).
	Key string `yaml:"key"`
	// CA is the mesh CA certificate (PEM) that peers must chain to.
	CA string `yaml:"ca"`
}

// AllowRule lets one calling service make some calls to the adapter's
// service, in the manner of Consul's intentions: the rules of a service
// name its callers. A rule with none of methods, paths and grpc allows the
// caller everything; one with methods or paths allows HTTP calls whose
// method and path match (either list empty: any); one with grpc allows the
// gRPC methods it lists.
type AllowRule struct {
	// From is the calling service (the service its certificate names), or
	// "*" for any caller of the mesh.
	From string `yaml:"from"`
	// Methods are HTTP methods: GET, POST, ...
	Methods []string `yaml:"methods"`
	// Paths are HTTP path globs: "/orders/*" (one segment, path.Match),
	// "/orders/**" (everything below), "/health" (exactly).
	Paths []string `yaml:"paths"`
	// GRPC are gRPC full methods or globs: "/shop.orders.v1.Orders/Get",
	// "/shop.orders.v1.Orders/*".
	GRPC []string `yaml:"grpc"`
}

// Secure reports whether the sidecar runs with an identity.
func (c *Config) Secure() bool { return c.Identity != nil }

func (c *Config) validateSecurity(errs *Error) {
	if id := c.Identity; id != nil {
		ok := true
		for _, f := range []struct{ key, file string }{{"identity.cert", id.Cert}, {"identity.key", id.Key}, {"identity.ca", id.CA}} {
			if f.file == "" {
				errs.add(f.key, 0, "missing: the identity needs cert, key and ca files (make them with `busmesh ca issue SERVICE`)")
				ok = false
			}
		}
		if ok {
			c.checkIdentity(errs, id)
		}
		if c.Insecure {
			errs.add("insecure", 0, "true with an identity section: choose one (insecure: true only silences the warning of a sidecar without identity)")
		}
	}
	if c.Identity == nil {
		if a := c.Adapter; a != nil && a.Seal {
			errs.add("adapter.seal", 0, "true needs an identity section: sealing uses the keys agreed from the certificates")
		}
		if a := c.Ambassador; a != nil {
			for _, svc := range slices.Sorted(maps.Keys(a.Services)) {
				if p := a.Services[svc]; p != nil && p.Seal {
					errs.add("ambassador.services."+svc+".seal", 0, "true needs an identity section: sealing uses the keys agreed from the certificates")
				}
			}
		}
	}
	if a := c.Adapter; a != nil {
		for i, r := range a.Allow {
			checkRule(errs, fmt.Sprintf("adapter.allow[%d]", i), r)
		}
	}
}

// checkIdentity loads the identity files and checks that the certificate
// names this sidecar's mesh and services.
func (c *Config) checkIdentity(errs *Error, files *Identity) {
	id, err := identity.Load(files.Cert, files.Key, files.CA)
	if err != nil {
		errs.add("identity", 0, "cert %q, key %q, ca %q do not load: %v", files.Cert, files.Key, files.CA, err)
		return
	}
	if id.Mesh() != c.Mesh {
		errs.add("identity.cert", 0, "%q is of mesh %q, not this sidecar's mesh %q", files.Cert, id.Mesh(), c.Mesh)
	}
	if a := c.Adapter; a != nil && a.Service != id.Service() {
		errs.add("identity.cert", 0, "%q names service %q, but adapter.service is %q (issue one for %q)", files.Cert, id.Service(), a.Service, a.Service)
	}
	if a := c.Ambassador; a != nil && a.Service != "" && a.Service != id.Service() {
		errs.add("identity.cert", 0, "%q names service %q, but ambassador.service is %q: calls go out as the certificate's service", files.Cert, id.Service(), a.Service)
	}
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}

func checkRule(errs *Error, key string, r AllowRule) {
	if r.From != "*" {
		if err := broker.ValidToken(r.From); err != nil {
			errs.add(key+".from", 0, "%v (a calling service, or \"*\" for any)", err)
		}
	}
	for i, m := range r.Methods {
		if !slices.Contains(httpMethods, m) {
			errs.add(fmt.Sprintf("%s.methods[%d]", key, i), 0, "%q is not an HTTP method (allowed: %s)", m, strings.Join(httpMethods, ", "))
		}
	}
	for i, p := range r.Paths {
		if err := checkGlob(p); err != nil {
			errs.add(fmt.Sprintf("%s.paths[%d]", key, i), 0, "%q %v (example: \"/orders/*\" or \"/orders/**\")", p, err)
		}
	}
	for i, g := range r.GRPC {
		if err := checkGlob(g); err != nil || strings.Count(g, "/") != 2 {
			errs.add(fmt.Sprintf("%s.grpc[%d]", key, i), 0, "%q is not a gRPC full method or glob (example: \"/shop.orders.v1.Orders/Get\" or \"/shop.orders.v1.Orders/*\")", g)
		}
	}
}

func checkGlob(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("does not start with /")
	}
	if _, err := path.Match(strings.TrimSuffix(p, "**"), "/"); err != nil {
		return fmt.Errorf("is not a glob: %v", err)
	}
	return nil
}
