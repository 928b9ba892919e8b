// Package nats is the NATS backend of package broker, on
// github.com/nats-io/nats.go, and the embedded in-process NATS server that
// is busmesh's zero-setup default.
//
// Subjects and queue groups map one to one; delivery is core NATS (at most
// once). A lost connection is retried forever with jittered backoff and
// subscriptions are restored by the client. The backend is a
// broker.Returner (NATS "no responders") and a broker.SizeLimiter (the
// server's max_payload).
package nats
