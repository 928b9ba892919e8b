//go:build nodev

package main

import "fmt"

// inProcessBroker refuses: a nodev build (the container image) has no
// broker in it.
func inProcessBroker(kind string) (url, name string, stop func(), err error) {
	return "", "", nil, fmt.Errorf("--broker %s: this busmesh was built with -tags nodev, as the container image is, and has no in-process broker; use --broker rabbitmq, or a busmesh from go install ./cmd/busmesh", kind)
}
