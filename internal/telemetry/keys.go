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
