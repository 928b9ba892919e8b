// Package telemetry holds what both sidecars share for observability: the
// log attribute keys, the logger set-up, a log rate limiter for floods of
// bad input, the Prometheus metrics with their bounded label values, a
// metering decorator around broker.Broker, the per-edge sliding window
// behind `busmesh top`, the OpenTelemetry tracer and the access log. The
// sidecars record calls; this package only holds the instruments. See
// docs/architecture.md (step 13) and docs/monitoring.md.
package telemetry
