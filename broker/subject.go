package broker

import (
	"fmt"
	"strings"
)

// DefaultMesh is the mesh a sidecar joins when its config names none.
const DefaultMesh = "default"

// Subjects names the subjects of one mesh. Every subject starts with
// busmesh.<mesh>., so meshes that share a broker (staging and production,
// two teams) never see each other's services, calls or announcements, and
// every backend carries the subjects unchanged. A name inside a subject
// (mesh, service, version, instance, sidecar) is one token (see
// ValidToken). Queue groups are named after the subject they read, so they
// are per mesh too.
//
//	busmesh.<mesh>.svc.<service>                 requests, queue group of the service
//	busmesh.<mesh>.svc.<service>.v.<version>     requests, queue group of one version
//	busmesh.<mesh>.svc.<service>.i.<instance>    requests for one instance
//	busmesh.<mesh>.inbox.<sidecar>               an ambassador's answers and frames
//	busmesh.<mesh>.inbox.<sidecar>.adapter       an adapter's frames and cancels
//	busmesh.<mesh>.cancel.<service>              cancels of calls not yet accepted (fan-out)
//	busmesh.<mesh>.discovery.svc.<service>       a service's announcements (fan-out)
//	busmesh.<mesh>.discovery.ping.<service>      questions to a service's adapters (fan-out)
//	busmesh.<mesh>.inbox.<id>.discovery          answers to one asker
//	busmesh.<mesh>.certs.<service>               certificate requests, queue group of the service
//	busmesh.<mesh>.inbox.<sidecar>.certs         an ambassador's certificate answers
type Subjects struct{ prefix string }

// NewSubjects returns the subjects of mesh; "" is DefaultMesh.
func NewSubjects(mesh string) Subjects {
	if mesh == "" {
		mesh = DefaultMesh
	}
	return Subjects{prefix: "busmesh." + mesh + "."}
}

// Service is where requests for a service go, read by its adapters in the
// queue group of the same name.
func (s Subjects) Service(service string) string { return s.prefix + "svc." + service }

// Version is where requests for one version of a service go, read by the
// adapters of that version in the queue group of the same name: a version
// subset that works with the broker's own balancing.
func (s Subjects) Version(service, version string) string {
	return s.prefix + "svc." + service + ".v." + version
}

// Instance is where requests for one instance of a service go.
func (s Subjects) Instance(service, instance string) string {
	return s.prefix + "svc." + service + ".i." + instance
}

// Inbox is an ambassador's own subject: answers and stream frames for the
// calls it started.
func (s Subjects) Inbox(sidecar string) string { return s.prefix + "inbox." + sidecar }

// AdapterInbox is an adapter's own subject: stream frames and cancels for
// the calls it serves. It differs from Inbox so that one sidecar can run
// both.
func (s Subjects) AdapterInbox(sidecar string) string {
	return s.prefix + "inbox." + sidecar + ".adapter"
}

// Cancel carries cancellations of calls to a service whose serving instance
// the caller does not know yet (fan-out to all its adapters).
func (s Subjects) Cancel(service string) string { return s.prefix + "cancel." + service }

// Discovery carries the announcements of one service's adapters
// (fan-out): only the sidecars that use the service subscribe, so a
// sidecar pays for the services it uses, not for the whole mesh.
func (s Subjects) Discovery(service string) string { return s.prefix + "discovery.svc." + service }

// DiscoveryPing carries questions to one service's adapters (fan-out):
// each answers with its announcement, sent to the asker's DiscoveryInbox
// only.
func (s Subjects) DiscoveryPing(service string) string { return s.prefix + "discovery.ping." + service }

// DiscoveryInbox is where the answers to one asker's pings go; id is the
// asker's own random token. It is an inbox (see IsInbox).
func (s Subjects) DiscoveryInbox(id string) string { return s.prefix + "inbox." + id + ".discovery" }

// Certs is where an ambassador asks for a service's certificate, read by
// the service's adapters in the queue group of the same name.
func (s Subjects) Certs(service string) string { return s.prefix + "certs." + service }

// CertsReply is where an ambassador's certificate requests are answered.
func (s Subjects) CertsReply(sidecar string) string { return s.prefix + "inbox." + sidecar + ".certs" }

// ServiceOf returns the service a request or cancel subject of this mesh
// names (svc.<service>[.v.<version>|.i.<instance>] or cancel.<service>).
func (s Subjects) ServiceOf(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.prefix)
	if !ok {
		return "", false
	}
	if r, ok := strings.CutPrefix(rest, "svc."); ok {
		service, _, _ := strings.Cut(r, ".")
		return service, service != ""
	}
	if r, ok := strings.CutPrefix(rest, "cancel."); ok {
		return r, r != "" && !strings.Contains(r, ".")
	}
	return "", false
}

// IsInbox reports whether subject is a sidecar's inbox (busmesh.<mesh>.
// inbox.<sidecar>[.adapter]): read by one process only, so a backend may
// give it a single partition or an exclusive queue.
func IsInbox(subject string) bool {
	rest, ok := strings.CutPrefix(subject, "busmesh.")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ".")
	return ok && strings.HasPrefix(rest, "inbox.")
}

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
