package config

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/busmesh/busmesh/broker"
)

// bareScheme is a broker named by its scheme alone, as in "embedded".
var bareScheme = regexp.MustCompile(`^[a-z][a-z0-9+.-]*$`)

// schemeTypo is a URL whose "://" was mistyped: "nats//host", "nats:/host".
var schemeTypo = regexp.MustCompile(`^([a-z][a-z0-9+.-]*):?/*([^/].*)$`)

// checkBroker checks the broker URL before anything connects: its shape,
// its scheme (against the backends this binary registered, when any did)
// and its host:port pairs.
func checkBroker(errs *Error, raw string) { checkBrokerURL(errs, "broker", raw) }

// checkBrokerURL is checkBroker for the URL at key.
func checkBrokerURL(errs *Error, key, raw string) {
	u, err := broker.ParseURL(raw)
	if err != nil {
		errs.add(key, 0, "%v", err)
		return
	}
	shown := broker.Redact(raw)
	if !strings.Contains(raw, "://") {
		if !bareScheme.MatchString(raw) {
			hint := ""
			if m := schemeTypo.FindStringSubmatch(raw); m != nil {
				hint = fmt.Sprintf("; did you mean %q?", m[1]+"://"+m[2])
			}
			errs.add(key, 0, "%q is not a broker URL%s (example: nats://127.0.0.1:4222, or embedded)", shown, hint)
			return
		}
	}
	if schemes := broker.Schemes(); len(schemes) > 0 && !slices.Contains(schemes, u.Scheme) {
		errs.add(key, 0, "%q: unknown broker scheme %q (supported: %s)", shown, u.Scheme, strings.Join(schemes, ", "))
		return
	}
	if !strings.Contains(raw, "://") || strings.HasPrefix(u.Scheme, "embedded") && u.Host == "" {
		return
	}
	if u.Host == "" {
		errs.add(key, 0, "%q names no host (example: %s://127.0.0.1:%s)", shown, u.Scheme, examplePort(u.Scheme))
		return
	}
	for _, hp := range strings.Split(u.Host, ",") { // Kafka lists its seed brokers
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			if strings.Contains(hp, ":") {
				errs.add(key, 0, "%q: %q is not host:port", shown, hp)
				return
			}
			host, port = hp, ""
		}
		if host == "" {
			errs.add(key, 0, "%q: %q names no host", shown, hp)
			return
		}
		if port != "" {
			if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				errs.add(key, 0, "%q: port %q is not a port (1-65535)", shown, port)
				return
			}
		}
	}
}

func examplePort(scheme string) string {
	switch {
	case strings.HasPrefix(scheme, "amqp"):
		return "5672"
	case strings.HasPrefix(scheme, "kafka"):
		return "9092"
	}
	return "4222"
}

// sameBroker tells whether two broker URLs name the same server: the
// same scheme, hosts and path (a RabbitMQ vhost), whatever their options
// and credentials.
func sameBroker(a, b string) bool {
	ua, errA := broker.ParseURL(a)
	ub, errB := broker.ParseURL(b)
	return errA == nil && errB == nil && ua.Host != "" &&
		ua.Scheme == ub.Scheme && ua.Host == ub.Host && strings.TrimSuffix(ua.Path, "/") == strings.TrimSuffix(ub.Path, "/")
}
