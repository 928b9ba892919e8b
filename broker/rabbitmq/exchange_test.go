package rabbitmq_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/busmesh/busmesh/broker/rabbitmq"
	"github.com/busmesh/busmesh/internal/testutil"
)

// TestExchangeType: a new exchange is declared direct, or topic when the
// URL asks; one an earlier busmesh declared as topic is used as it is, with
// a log line saying so; one of another type is an error naming it.
func TestExchangeType(t *testing.T) {
	addr := testAddr(t)
	raw, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	// declare declares name as kind on a channel of its own: nil when the
	// exchange is new or already of that kind.
	declare := func(t *testing.T, name, kind string) error {
		ch, err := raw.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		return ch.ExchangeDeclare(name, kind, true, false, false, false, nil)
	}
	fresh := func(t *testing.T) string {
		name := fmt.Sprintf("busmesh-test-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
		t.Cleanup(func() {
			if ch, err := raw.Channel(); err == nil {
				_ = ch.ExchangeDelete(name, false, false)
				ch.Close()
			}
		})
		return name
	}

	for _, tc := range []struct {
		name    string
		query   string // besides exchange=
		before  string // the type the exchange has before busmesh dials; "" for none
		want    string // its type after
		keptLog bool   // a line says the exchange was kept as declared before
	}{
		{"New", "", "", amqp.ExchangeDirect, false},
		{"EarlierTopic", "", amqp.ExchangeTopic, amqp.ExchangeTopic, true},
		{"AskedTopic", "exchange_type=topic&", "", amqp.ExchangeTopic, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fresh(t)
			if tc.before != "" {
				if err := declare(t, name, tc.before); err != nil {
					t.Fatal(err)
				}
			}
			c, logs := dialLogged(t, "amqp://guest:guest@"+addr+"/?"+tc.query+"exchange="+name)
			roundTrip(t, c)
			if err := declare(t, name, tc.want); err != nil {
				t.Errorf("the exchange is not a durable %s one: %v", tc.want, err)
			}
			got := logs.String()
			kept := strings.Contains(got, "exchange kept as declared before") && strings.Contains(got, name) && strings.Contains(got, "type="+tc.want)
			if kept != tc.keptLog {
				t.Errorf("log line about keeping the exchange: %v, want %v; logs:\n%s", kept, tc.keptLog, got)
			}
		})
	}
	t.Run("OtherType", func(t *testing.T) {
		name := fresh(t)
		if err := declare(t, name, amqp.ExchangeFanout); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		c, err := rabbitmq.Dial(ctx, "amqp://guest:guest@"+addr+"/?exchange="+name, nil)
		if err == nil {
			c.Close()
			t.Fatal("Dial succeeded on a fanout exchange")
		}
		if msg := err.Error(); !strings.Contains(msg, name) || !strings.Contains(msg, "fanout") {
			t.Errorf("Dial error = %q, want it to name the exchange and its type", msg)
		}
	})
}

// dialLogged dials url with a logger writing to the returned buffer, and
// closes the Conn when the test ends.
func dialLogged(t *testing.T, url string) (*rabbitmq.Conn, *testutil.Buffer) {
	t.Helper()
	logs := &testutil.Buffer{}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := rabbitmq.Dial(ctx, url, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, logs
}

// roundTrip publishes to a fan-out subscriber and a queue group on c and
// waits for both to receive the message.
func roundTrip(t *testing.T, c *rabbitmq.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	got := make(chan string, 2)
	h := func(kind string) func(context.Context, []byte) {
		return func(_ context.Context, b []byte) { got <- kind + ":" + string(b) }
	}
	if _, err := c.Subscribe(ctx, "exchange.test", h("fanout")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.QueueSubscribe(ctx, "exchange.test", "workers", h("group")); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "exchange.test", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"fanout:hello": true, "group:hello": true}
	for len(want) > 0 {
		select {
		case m := <-got:
			if !want[m] {
				t.Fatalf("unexpected delivery %q", m)
			}
			delete(want, m)
		case <-ctx.Done():
			t.Fatalf("not delivered: %v", want)
		}
	}
}
