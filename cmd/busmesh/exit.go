package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

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

// usageErrors makes wrong arguments and flags exit with exitUsage, on
// every command under root.
func usageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	for _, c := range root.Commands() {
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError{fmt.Errorf("%s: %w (usage: busmesh %s)", cmd.Name(), err, cmd.Use)}
				}
				return nil
			}
		}
	}
}
