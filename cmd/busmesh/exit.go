package main

import "fmt"

// Exit codes, for scripts. Documented in the README ("Exit codes") and in
// `busmesh call --help`.
const (
	// exitOK: done; for call, the service answered below 500.
	exitOK = 0
	// exitFailed: busmesh could not do it (no sidecar at --admin, broker
	// unreachable, a port in use, a check failed).
	exitFailed = 1
	// exitUsage: a mistake in the command line or the config file.
	exitUsage = 2
	// exitMeshError: call was answered by the mesh, not the service
	// (X-Busmesh-Error: no-healthy-instances, timeout, ...).
	exitMeshError = 3
	// exitServerError: call was answered by the service with a 5xx.
	exitServerError = 4
)

// exitError ends busmesh with code after printing err (nothing when err is
// nil: the output already said it).
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e exitError) Unwrap() error { return e.err }
