package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"

	"github.com/busmesh/busmesh/internal/config"
)

// listener is one address a sidecar will listen on, with the config key
// (and, in dev mode, the flag) that sets it.
type listener struct {
	key  string
	addr string
}

// listeners lists the addresses cfg listens on, in a stable order.
func listeners(cfg *config.Config) []listener {
	var ls []listener
	add := func(key, addr string) {
		if addr != "" {
			ls = append(ls, listener{key, addr})
		}
	}
	add("admin", cfg.Admin)
	if strings.HasPrefix(cfg.Broker, "embedded://") {
		add("broker", strings.TrimPrefix(cfg.Broker, "embedded://"))
	}
	if a := cfg.Ambassador; a != nil {
		add("ambassador.http", a.HTTP)
		for _, svc := range slices.Sorted(maps.Keys(a.Upstreams)) {
			add("ambassador.upstreams."+svc, a.Upstreams[svc])
		}
		add("ambassador.grpc", a.GRPC)
	}
	return ls
}

// portInUseError is a listen address someone else holds.
type portInUseError struct {
	key, addr string
	setting   string // what to change: the key, or a dev-mode flag
	err       error
}

func (e *portInUseError) Error() string {
	_, port, _ := net.SplitHostPort(e.addr)
	return fmt.Sprintf("%s %s: %s\n  try: stop what listens there (ss -ltnp 'sport = :%s' names it; another busmesh?), or %s",
		e.key, e.addr, listenReason(e.err), port, e.setting)
}

func (e *portInUseError) Unwrap() error { return e.err }

func listenReason(err error) string {
	s := err.Error()
	switch {
	case strings.Contains(s, "address already in use"):
		return "the port is in use"
	case strings.Contains(s, "cannot assign requested address"):
		return "no network interface has this address"
	case strings.Contains(s, "permission denied"):
		return "permission denied (ports below 1024 need privileges)"
	}
	return s
}

// checkPorts tries each listener before anything connects, so that a port
// in use is reported at once with the key (or flag, from flags by key)
// that sets it. The ports are released again: the sidecar listens later.
func checkPorts(ls []listener, flags map[string]string) error {
	var errs []error
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			setting := "set " + l.key + " to a free port"
			if f, ok := flags[l.key]; ok {
				setting = "pass " + f + " HOST:PORT (127.0.0.1:0 picks a free one)"
			}
			errs = append(errs, &portInUseError{key: l.key, addr: l.addr, setting: setting, err: err})
			continue
		}
		ln.Close()
	}
	return errors.Join(errs...)
}
