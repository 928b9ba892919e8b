// Package discovery finds the instances of services without an external
// registry, the same way on every broker: adapters announce themselves on
// busmesh.discovery (Announcer), ambassadors keep what they hear in a
// Registry with TTL expiry and ping at start to fill it at once (Watcher).
// What to do with the instances (load balancing, the "no healthy
// instances" answer) is the ambassador's. See docs/architecture.md and
// docs/architecture-discovery.md.
package discovery
