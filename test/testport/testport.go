// Package testport hands the test suites loopback addresses to listen on.
//
// A port the kernel picks for net.Listen(":0") comes from the ephemeral
// range, which outgoing connections draw from too: between the test
// closing its probe listener and a sidecar binding the port, a client
// connection of any process may take it ("the port is in use"). Ports
// here come from below that range, which the kernel never hands to an
// outgoing connection, and one process never gets the same one twice.
package testport

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// The range ports are drawn from: under Linux's default ephemeral range
// (32768–60999), above the well-known and most registered ports.
const (
	low  = 20000
	high = 32768
)

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Free returns a loopback address (127.0.0.1:port) nobody listens on now,
// not returned before in this process.
func Free() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := low + rand.IntN(high-low)
		if given[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // in use
		}
		l.Close()
		given[port] = true
		return addr, nil
	}
	return "", errors.New("testport: no free port found in 1000 tries")
}
