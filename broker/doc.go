// Package broker owns the transport of the data path: the small Broker
// interface every backend implements, the registry that picks a backend by
// URL scheme, and the subject names busmesh uses.
//
// Backends live in subpackages (nats, kafka, rabbitmq) and register in init;
// cmd/busmesh blank-imports those it ships. Request/reply, correlation and
// retries are not here: they are built once above the interface, in the
// ambassador. See docs/architecture.md.
package broker
