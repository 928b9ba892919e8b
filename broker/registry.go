package broker

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// OpenFunc connects to the broker at u. It must return within ctx's deadline
// with an error that says why the broker could not be reached. logger is
// never nil.
type OpenFunc func(ctx context.Context, u *url.URL, logger *slog.Logger) (Broker, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]OpenFunc{}
)

// Register makes a backend available under a URL scheme. Backends call it
// from init. It panics on an empty or duplicate scheme or a nil OpenFunc: a
// wiring mistake should stop the binary at start-up.
func Register(scheme string, open OpenFunc) {
	if scheme == "" || open == nil {
		panic("broker: Register needs a scheme and an OpenFunc")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[scheme]; dup {
		panic("broker: Register called twice for scheme " + scheme)
	}
	registry[scheme] = open
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	s := make([]string, 0, len(registry))
	for k := range registry {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// UnknownSchemeError is returned by Open for a URL whose scheme no backend
// registered.
type UnknownSchemeError struct {
	Scheme    string
	Supported []string
}

func (e *UnknownSchemeError) Error() string {
	return fmt.Sprintf("unknown broker scheme %q (supported: %s)", e.Scheme, strings.Join(e.Supported, ", "))
}

// ConnectError is returned by Open when the broker cannot be reached.
type ConnectError struct {
	URL string // redacted: no password
	Err error
}

func (e *ConnectError) Error() string { return fmt.Sprintf("connect to %s: %v", e.URL, e.Err) }

// Unwrap returns the cause.
func (e *ConnectError) Unwrap() error { return e.Err }

// Open connects to the broker named by rawURL, choosing the backend by the
// URL's scheme: nats://host:4222, amqp://user:pass@host:5672/vhost,
// kafka://host:9092, or the bare word "embedded". A nil logger discards.
// Errors hide the URL's password.
func Open(ctx context.Context, rawURL string, logger *slog.Logger) (Broker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	u, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	registryMu.RLock()
	open := registry[u.Scheme]
	registryMu.RUnlock()
	if open == nil {
		return nil, &UnknownSchemeError{Scheme: u.Scheme, Supported: Schemes()}
	}
	b, err := open(ctx, u, logger)
	if err != nil {
		return nil, &ConnectError{URL: u.Redacted(), Err: err}
	}
	return b, nil
}

// ParseURL parses a broker URL. A URL without "://" is a bare scheme, as in
// "embedded".
func ParseURL(rawURL string) (*url.URL, error) {
	if rawURL == "" {
		return nil, fmt.Errorf("empty broker URL (example: nats://127.0.0.1:4222)")
	}
	if !strings.Contains(rawURL, "://") {
		return &url.URL{Scheme: rawURL}, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Error repeats the URL, password included; keep only the reason.
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("broker URL %q: %w", Redact(rawURL), err)
	}
	return u, nil
}

// Redact returns rawURL with any password replaced by "xxxxx".
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		if i := strings.Index(rawURL, "@"); err != nil && i >= 0 {
			if j := strings.Index(rawURL, "://"); j >= 0 && j < i {
				return rawURL[:j+3] + "xxxxx" + rawURL[i:]
			}
		}
		return rawURL
	}
	return u.Redacted()
}
