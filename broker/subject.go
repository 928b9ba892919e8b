package broker

import "fmt"

// The subjects busmesh uses. Every backend carries them unchanged; a name
// inside a subject (service, instance, sidecar) is one token (see
// ValidToken).
const (
	// DiscoverySubject carries adapters' announcements (fan-out).
	DiscoverySubject = "busmesh.discovery"
	// DiscoveryPingSubject carries ambassadors' pings: every adapter answers
	// with an announcement (fan-out).
	DiscoveryPingSubject = "busmesh.discovery.ping"

	servicePrefix = "busmesh.svc."
	inboxPrefix   = "busmesh.inbox."
	cancelPrefix  = "busmesh.cancel."
)

// ServiceSubject is where requests for a service go, read by its adapters in
// the queue group named after the service.
func ServiceSubject(service string) string { return servicePrefix + service }

// InstanceSubject is where requests for one instance of a service go.
func InstanceSubject(service, instance string) string {
	return servicePrefix + service + "." + instance
}

// InboxSubject is an ambassador's own subject: answers and stream frames
// for the calls it started.
func InboxSubject(sidecar string) string { return inboxPrefix + sidecar }

// AdapterInboxSubject is an adapter's own subject: stream frames and
// cancels for the calls it serves. It differs from InboxSubject so that one
// sidecar can run both.
func AdapterInboxSubject(sidecar string) string { return inboxPrefix + sidecar + ".adapter" }

// CancelSubject carries cancellations of calls to a service whose serving
// instance the caller does not know yet (fan-out to all its adapters).
func CancelSubject(service string) string { return cancelPrefix + service }

// maxToken bounds a token so that every subject fits Kafka's 249-byte topic
// names.
const maxToken = 64

// ValidToken reports whether s can be one subject token: 1 to 64 ASCII
// letters, digits, '-' or '_'. Dots, spaces and wildcards would change a
// subject's meaning on some broker.
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("empty name")
	}
	if len(s) > maxToken {
		return fmt.Errorf("%q is longer than %d characters", s, maxToken)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q has %q; use letters, digits, '-' and '_'", s, c)
		}
	}
	return nil
}
