// Package validate checks what deploy/ ships against the libraries that
// read it: the Helm chart rendered by Helm's engine, the Kubernetes
// manifests and `busmesh inject` output decoded strictly into the
// k8s.io/api types, the compose file loaded by compose-go. It is its own
// module so that the main module never imports Kubernetes, Helm or
// compose; `make test` and CI run it (cd deploy/validate && go test ./...).
package validate
