// Package telemetry holds what both sidecars share for observability: the
// log attribute keys, the logger set-up, a log rate limiter for floods of
// bad input, and the Prometheus metrics. See DESIGN.md, "Mesh features"
// (traffic monitoring).
package telemetry
