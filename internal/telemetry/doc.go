// Package telemetry holds what both sidecars share for observability: the
// log attribute keys, the logger set-up, a log rate limiter for floods of
// bad input, and the Prometheus metrics. See docs/architecture.md
// (step 13).
package telemetry
