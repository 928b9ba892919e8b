package broker_test

import (
	"context"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/busmesh/busmesh/broker"
)

func TestOpenUnknownScheme(t *testing.T) {
	broker.Register("regtest", func(context.Context, *url.URL, *slog.Logger) (broker.Broker, error) {
		return nil, errors.New("refused: bad credentials")
	})
	_, err := broker.Open(t.Context(), "mqtt://127.0.0.1:1883", nil)
	var ue *broker.UnknownSchemeError
	if !errors.As(err, &ue) || ue.Scheme != "mqtt" {
		t.Fatalf("Open(mqtt://) = %v, want *UnknownSchemeError for mqtt", err)
	}
	if !strings.Contains(err.Error(), "regtest") {
		t.Errorf("error %q does not list the registered schemes", err)
	}

	_, err = broker.Open(t.Context(), "regtest://user:s3cret@127.0.0.1:1", nil)
	var ce *broker.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("Open(regtest://) = %v, want *ConnectError", err)
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "bad credentials") ||
		!strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error %q: want the URL without its password, and the reason", err)
	}
}

func TestRegisterPanics(t *testing.T) {
	for name, reg := range map[string]func(){
		"empty scheme": func() { broker.Register("", nil) },
		"duplicate": func() {
			f := func(context.Context, *url.URL, *slog.Logger) (broker.Broker, error) { return nil, nil }
			broker.Register("dup", f)
			broker.Register("dup", f)
		},
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Register did not panic")
				}
			}()
			reg()
		})
	}
}

func TestRedact(t *testing.T) {
	tests := map[string]string{
		"amqp://guest:guest@127.0.0.1:5672/": "amqp://guest:xxxxx@127.0.0.1:5672/",
		"nats://127.0.0.1:4222":              "nats://127.0.0.1:4222",
		"embedded":                           "embedded",
	}
	for in, want := range tests {
		if got := broker.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidToken(t *testing.T) {
	for _, ok := range []string{"orders", "orders-v2", "a_b", "X1"} {
		if err := broker.ValidToken(ok); err != nil {
			t.Errorf("ValidToken(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", ">", strings.Repeat("x", 65)} {
		if broker.ValidToken(bad) == nil {
			t.Errorf("ValidToken(%q) = nil, want an error", bad)
		}
	}
}
