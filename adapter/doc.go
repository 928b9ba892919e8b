// Package adapter is the server-side sidecar: it joins its service's queue
// groups on the broker, takes calls off them within a concurrency limit,
// makes each to the local application (an app: HTTP or gRPC), and sends the
// answer back to the caller's inbox, streamed in frames when it is large.
//
// It owns the subscriptions and their lifecycle, the admission chain (what
// is malformed, expired or misdirected is counted and dropped before a
// worker is taken, and the adapter keeps serving), the workers, the table
// of calls being served, the call to the application, health checks, and
// draining on shutdown. See docs/architecture.md.
package adapter
