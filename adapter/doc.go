// Package adapter is the server-side sidecar: it joins its service's queue
// group on the broker, takes calls off it within a concurrency limit, makes
// each to the local application as a plain HTTP call, and sends the answer
// back to the caller's inbox, streamed in frames when it is large.
//
// It owns the subscription, the checks on what arrives (malformed, expired
// and misdirected envelopes are counted and dropped, and the adapter keeps
// serving), the call to the application, and draining on shutdown. See
// DESIGN.md, "Data path".
package adapter
