package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// The bench binary re-executes itself for the processes a run needs, so
// their CPU and memory are accounted apart from the load generator's, as
// the sidecars' are: `bench -child ROLE FLAGS...`.
const childFlag = "-child"

// readyLine starts the one line a child prints on stdout once it serves.
const readyLine = "ready"

// childRoles maps a role to the function that runs it until ctx ends. Each
// gets its own flag set and reports readiness through ready.
func childRoles() map[string]func(ctx context.Context, fs *flag.FlagSet, args []string, ready func(string)) error {
	return map[string]func(context.Context, *flag.FlagSet, []string, func(string)) error{
		"app":       runApp,
		"proxy":     runProxy,
		"kfake":     runKfake,
		"responder": runResponder,
	}
}

// runChild runs the role named by args[0] until SIGTERM or SIGINT.
func runChild(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%s needs a role", childFlag)
	}
	role, ok := childRoles()[args[0]]
	if !ok {
		return fmt.Errorf("unknown child role %q", args[0])
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	ready := func(detail string) { fmt.Printf("%s %s\n", readyLine, detail) }
	return role(ctx, fs, args[1:], ready)
}
