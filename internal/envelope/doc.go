// Package envelope encodes and decodes what sidecars put on the bus: the
// busmesh.v1 Envelope holding a Request, Response or Frame.
//
// The codec is written by hand on protowire, wire-compatible with
// proto/busmesh/v1/envelope.proto (the fuzz test checks it against the
// generated code), because the request path cannot afford the generated
// code's allocations: decoding aliases the input instead of copying it, and
// encoding appends to a caller's buffer. Decoding never panics: malformed
// input gives an error wrapping ErrMalformed. Size limits are the caller's
// (the broker's message limit). See docs/architecture.md, "The envelope".
package envelope
