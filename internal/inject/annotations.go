package inject

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/busmesh/busmesh/broker"
)

// The annotations inject reads. They go on the pod template (a Pod's own
// metadata); the workload's metadata is read for any the template lacks.
const (
	// AnnotationService names the service the pod serves: the sidecar runs
	// an adapter for it. Needs AnnotationPort.
	AnnotationService = "busmesh.io/service"
	// AnnotationPort is the application's port on localhost, where the
	// adapter makes the calls.
	AnnotationPort = "busmesh.io/port"
	// AnnotationProtocol is http (default), grpc, https or grpcs: how the
	// adapter calls the application.
	AnnotationProtocol = "busmesh.io/protocol"
	// AnnotationAppTLS names a Secret (ca.crt, tls.crt, tls.key: what
	// cert-manager's Certificate writes) mounted read-only at AppTLSDir:
	// the roots the application's certificate must chain to and the
	// client certificate the adapter shows it (adapter.tls). Needs https or
	// grpcs.
	AnnotationAppTLS = "busmesh.io/app-tls"
	// AnnotationAppServerName is the name the application's certificate
	// must carry (adapter.tls.server_name); default 127.0.0.1.
	AnnotationAppServerName = "busmesh.io/app-server-name"
	// AnnotationHealth is a path the adapter GETs to check an HTTP
	// application; without it the application counts as healthy.
	AnnotationHealth = "busmesh.io/health"
	// AnnotationUpstreams lists the services the application calls, each
	// with its local port: "orders:9001,payments:9002". The sidecar runs an
	// ambassador with those ports and the shared port 127.0.0.1:15001; an
	// empty value opens the shared port only.
	AnnotationUpstreams = "busmesh.io/upstreams"
	// AnnotationBroker is the broker URL (nats://nats:4222,
	// amqp://user:pass@rabbitmq:5672/, kafka://kafka-bootstrap:9092).
	// Without it, `busmesh inject --broker` gives the default.
	AnnotationBroker = "busmesh.io/broker"
	// AnnotationBrokerSecret names a Secret whose key "url" holds the
	// broker URL, for URLs with credentials; it wins over AnnotationBroker.
	AnnotationBrokerSecret = "busmesh.io/broker-secret"
	// AnnotationMesh names the mesh the sidecar joins (config key mesh);
	// meshes sharing a broker never see each other. Default: default.
	AnnotationMesh = "busmesh.io/mesh"
	// AnnotationIdentity names a Secret (tls.crt, tls.key, ca.crt: the
	// files of busmesh ca issue and the mesh CA's certificate) mounted
	// read-only at IdentityDir; the sidecar's config names its files.
	AnnotationIdentity = "busmesh.io/identity"
	// AnnotationConfig is written by inject, not read: the sidecar's config
	// file, which the downward API projects into the container.
	AnnotationConfig = "busmesh.io/sidecar-config"
)

// Fixed places in an injected pod.
const (
	// ContainerName is the injected sidecar's name.
	ContainerName = "busmesh"
	// AdminPort is the sidecar's admin port (probes, /metrics), on every
	// interface of the pod so that the kubelet and Prometheus reach it.
	AdminPort = 15000
	// SharedPort is the ambassador's shared HTTP port on localhost.
	SharedPort = 15001
	// ConfigDir holds the sidecar's config file, ConfigFile.
	ConfigDir  = "/etc/busmesh/config"
	ConfigFile = ConfigDir + "/sidecar.yaml"
	// IdentityDir holds the identity Secret's files.
	IdentityDir = "/etc/busmesh/identity"
	// AppTLSDir holds the AnnotationAppTLS Secret's files.
	AppTLSDir = "/etc/busmesh/app-tls"
	// RunAsUser is the sidecar's user and group id (the image's nonroot).
	RunAsUser = 65532
)

// spec is what a workload's annotations ask for.
type spec struct {
	service    string
	port       int
	protocol   string
	health     string
	ambassador bool
	upstreams  map[string]int
	broker     string
	// brokerSecret, when set, holds the broker URL under BrokerSecretKey.
	brokerSecret string
	identity     string
	mesh         string
	// appTLS is the Secret of the adapter's TLS to the application, and
	// appServerName the name to verify.
	appTLS, appServerName string
}

// BrokerSecretKey is the key of the broker URL in AnnotationBrokerSecret's
// Secret.
const BrokerSecretKey = "url"

// requested reports whether an annotation asks for a sidecar.
func requested(get func(string) (string, bool)) bool {
	for _, k := range []string{AnnotationService, AnnotationPort, AnnotationUpstreams, AnnotationBroker, AnnotationBrokerSecret, AnnotationIdentity, AnnotationMesh} {
		if _, ok := get(k); ok {
			return true
		}
	}
	return false
}

// parseSpec reads the annotations; every problem names its annotation.
func parseSpec(get func(string) (string, bool), defaultBroker string) (*spec, error) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	s := &spec{protocol: "http"}

	service, hasService := get(AnnotationService)
	port, hasPort := get(AnnotationPort)
	upstreams, hasUpstreams := get(AnnotationUpstreams)
	switch {
	case hasService:
		s.service = service
		if err := broker.ValidToken(service); err != nil {
			bad("%s: %v (example: orders)", AnnotationService, err)
		}
		if !hasPort {
			bad("%s is missing: the application's port, where the adapter calls it (example: \"8080\")", AnnotationPort)
		} else if s.port = parsePort(port); s.port == 0 {
			bad("%s: %q is not a port (1-65535)", AnnotationPort, port)
		}
	case hasPort:
		bad("%s is set but %s is missing: the name the application is called by", AnnotationPort, AnnotationService)
	case !hasUpstreams:
		bad("%s (and %s) or %s is missing: nothing to serve or call", AnnotationService, AnnotationPort, AnnotationUpstreams)
	}
	if p, ok := get(AnnotationProtocol); ok {
		if p != "http" && p != "grpc" && p != "https" && p != "grpcs" {
			bad("%s: %q is not a protocol (allowed: http, grpc, https, grpcs)", AnnotationProtocol, p)
		}
		s.protocol = p
	}
	if sec, ok := get(AnnotationAppTLS); ok {
		switch {
		case sec == "":
			bad("%s: empty: the name of a Secret with ca.crt, tls.crt and tls.key", AnnotationAppTLS)
		case s.protocol != "https" && s.protocol != "grpcs":
			bad("%s: %q: TLS to the application needs %s https or grpcs, not %s", AnnotationAppTLS, sec, AnnotationProtocol, s.protocol)
		}
		s.appTLS = sec
	}
	if name, ok := get(AnnotationAppServerName); ok {
		if s.protocol != "https" && s.protocol != "grpcs" {
			bad("%s: %q: TLS to the application needs %s https or grpcs, not %s", AnnotationAppServerName, name, AnnotationProtocol, s.protocol)
		}
		s.appServerName = name
	}
	if h, ok := get(AnnotationHealth); ok {
		if !strings.HasPrefix(h, "/") {
			bad("%s: %q is not a path (example: /healthz)", AnnotationHealth, h)
		}
		s.health = h
	}
	if hasUpstreams {
		s.ambassador = true
		s.upstreams = map[string]int{}
		for entry := range strings.SplitSeq(upstreams, ",") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			name, p, _ := strings.Cut(entry, ":")
			n := parsePort(p)
			if err := broker.ValidToken(name); err != nil || n == 0 {
				bad("%s: %q is not service:port (example: orders:9001)", AnnotationUpstreams, entry)
				continue
			}
			s.upstreams[name] = n
		}
	}
	for name, p := range s.upstreams {
		taken := map[int]string{AdminPort: "the sidecar's admin port", SharedPort: "the ambassador's shared port"}
		if s.port != 0 {
			taken[s.port] = "the application's port (" + AnnotationPort + ")"
		}
		if what, ok := taken[p]; ok {
			bad("%s: %s:%d: %d is %s", AnnotationUpstreams, name, p, p, what)
		}
	}
	if s.service != "" && (s.port == AdminPort || s.port == SharedPort && s.ambassador) {
		bad("%s: %d is a port of the sidecar", AnnotationPort, s.port)
	}
	s.broker = defaultBroker
	if b, ok := get(AnnotationBroker); ok {
		s.broker = b
	}
	if sec, ok := get(AnnotationBrokerSecret); ok {
		if sec == "" {
			bad("%s: empty: the name of a Secret with the broker URL under %q", AnnotationBrokerSecret, BrokerSecretKey)
		}
		s.brokerSecret, s.broker = sec, ""
	}
	switch {
	case s.brokerSecret != "":
	case s.broker == "":
		bad("%s is missing: the broker URL (example: nats://nats:4222), %s, or busmesh inject --broker", AnnotationBroker, AnnotationBrokerSecret)
	default:
		if _, err := broker.ParseURL(s.broker); err != nil {
			bad("%s: %v", AnnotationBroker, err)
		}
	}
	if m, ok := get(AnnotationMesh); ok {
		if err := broker.ValidToken(m); err != nil {
			bad("%s: %v (example: shop)", AnnotationMesh, err)
		}
		s.mesh = m
	}
	if id, ok := get(AnnotationIdentity); ok {
		if id == "" {
			bad("%s: empty: the name of a Secret with tls.crt, tls.key and ca.crt", AnnotationIdentity)
		}
		s.identity = id
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return s, nil
}

// parsePort returns s as a port number, or 0.
func parsePort(s string) int {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0
	}
	return n
}
