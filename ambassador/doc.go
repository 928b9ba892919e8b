// Package ambassador is the client-side sidecar: it takes plain HTTP calls
// from local applications, on a shared port routed by the Host header or on
// a port per service, and carries each over the broker as an envelope to the
// service's adapters, then writes the answer back.
//
// It owns the listeners, routing, the inbox where answers arrive and their
// correlation by envelope id (Inbox), and the streaming of bodies too large
// for one message. Calling the application is the adapter's; transport is
// package broker's. See DESIGN.md, "Data path" and "How an application
// addresses a service".
package ambassador
