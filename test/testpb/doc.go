// Package testpb is the gRPC Echo service (echo.proto, with its generated
// code) that the end-to-end tests and the benchmark put behind an adapter:
// one method of each kind, and Server, its implementation.
package testpb
