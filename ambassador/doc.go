// Package ambassador is the client-side sidecar: it takes plain HTTP and
// gRPC calls from local applications, on a shared port routed by the Host
// header, on a port per service, or on the gRPC port, and carries each over
// the broker as an envelope to the service's adapters, then writes the
// answer back.
//
// It owns the listeners (which translate a call into a protocol-neutral
// Call and its answer back), the routing table, the call pipeline (an
// Invoker wrapped by Middleware), the balancer's picks, the inbox where
// answers arrive and their correlation by envelope id, and the streaming of
// bodies too large for one message. Calling the application is the
// adapter's; transport is package broker's. See docs/architecture.md.
package ambassador
