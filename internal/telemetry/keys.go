// Package telemetry holds what both sidecars share for observability: the
// log attribute keys, the Prometheus metrics and the logger set-up. See
// DESIGN.md, "Mesh features" (traffic monitoring).
package telemetry

// Log attribute keys. Every package logs with these, so one query finds an
// envelope or a subject across both sidecars.
const (
	KeyErr        = "err"
	KeySubject    = "subject"
	KeyService    = "service"
	KeyInstance   = "instance"
	KeyEnvelopeID = "envelope_id"
	KeyBroker     = "broker"
	KeyComponent  = "component"
	KeySidecar    = "sidecar"
	KeyAddr       = "addr"
	KeyReason     = "reason"
	KeyStatus     = "status"
	KeyMethod     = "method"
	KeyPath       = "path"
	KeyDuration   = "duration"
	KeyBytes      = "bytes"
)
