// Package inject adds the busmesh sidecar to Kubernetes workloads, the
// way `busmesh inject` does: it reads YAML documents (Pods, Deployments,
// StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Lists of them),
// and to every workload whose pod template carries busmesh.io/ annotations
// it adds one native sidecar (an init container with restartPolicy: Always,
// so it starts before the application and stops after it), the volume its
// config comes from, and the Prometheus scrape annotations.
//
// It works on the YAML node tree, never on typed structs: fields it does
// not know, key order and comments pass through as they were. Injecting
// twice gives the output of injecting once. It leaves the brokers, the
// Secrets holding identities and credentials, and applying the result to a
// cluster to others (deploy/README.md).
package inject
