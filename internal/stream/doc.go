// Package stream carries a call's body or gRPC messages over the bus when
// they do not fit in its first message: frames numbered per direction,
// reordered on arrival, and credit-based flow control in bytes (as HTTP/2
// does) so that a slow reader holds a window's worth of memory, not a whole
// stream. Both sidecars use it: the ambassador for request bodies it sends
// and response bodies it receives, the adapter the other way round.
//
// Envelopes are published through package bus's Publisher, which seals
// them when identities are on. See docs/architecture.md, "The envelope".
package stream
