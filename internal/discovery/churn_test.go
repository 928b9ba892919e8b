package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	_ "github.com/busmesh/busmesh/broker/kafka"
	_ "github.com/busmesh/busmesh/broker/nats"
	_ "github.com/busmesh/busmesh/broker/rabbitmq"
	"github.com/busmesh/busmesh/internal/discovery"
)

// TestChurn has instances join and leave every 100ms for 10s (2s under
// -short) over each broker, and checks that the registry of a watcher
// agrees with what is running: during the churn, no instance stopped more
// than a moment ago is still listed, and at the end the two are equal.
func TestChurn(t *testing.T) {
	kafka := os.Getenv("BUSMESH_TEST_KAFKA_BROKERS")
	if kafka == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		kafka = strings.Join(c.ListenAddrs(), ",")
	}
	nats := envOr("BUSMESH_TEST_NATS", "127.0.0.1:4222")
	rabbit := envOr("BUSMESH_TEST_RABBITMQ", "127.0.0.1:5672")
	for _, c := range []struct{ name, addr, url, start string }{
		{"nats", nats, "nats://" + nats, "nats-server -p 4222"},
		{"rabbitmq", rabbit, "amqp://guest:guest@" + rabbit + "/", "rabbitmq-server -detached"},
		{"kafka", strings.Split(kafka, ",")[0], "kafka://" + kafka, "unset BUSMESH_TEST_KAFKA_BROKERS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			brokertest.Require(t, c.name, c.addr, c.start)
			churn(t, c.url)
		})
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func churn(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	open := func() broker.Broker {
		b, err := broker.Open(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	watchB, announceB := open(), open()
	reg := discovery.NewRegistry(nil)
	w, err := discovery.Watch(ctx, watchB, "", reg, nil, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	service := fmt.Sprintf("churn-%d", time.Now().UnixNano())
	running := map[string]*discovery.Announcer{}
	stopped := map[string]time.Time{}
	start := func(name string) {
		a := discovery.NewAnnouncer(announceB, discovery.Self{Service: service, Instance: name, Sidecar: name},
			time.Second, nil, nil)
		if err := a.Start(ctx, true); err != nil {
			t.Fatal(err)
		}
		running[name] = a
	}
	stop := func(name string) {
		if err := running[name].Stop(ctx); err != nil {
			t.Fatal(err)
		}
		delete(running, name)
		stopped[name] = time.Now()
	}
	runningNames := func() []string {
		var n []string
		for name := range running {
			n = append(n, name)
		}
		slices.Sort(n)
		return n
	}
	listed := func() []string { return names(reg.Healthy(service)) } // Healthy is sorted by name
	d := 10 * time.Second
	if testing.Short() {
		d = 2 * time.Second
	}
	next := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		if len(running) == 0 || rand.IntN(2) == 0 {
			start(fmt.Sprintf("i%03d", next))
			next++
		} else {
			stop(runningNames()[rand.IntN(len(running))])
		}
		time.Sleep(100 * time.Millisecond)
		// A goodbye travels in one broker round trip; an instance stopped
		// more than a second ago must be gone.
		for _, name := range listed() {
			if at, ok := stopped[name]; ok && running[name] == nil && time.Since(at) > time.Second {
				t.Fatalf("%s stopped %v ago and is still listed", name, time.Since(at).Round(time.Millisecond))
			}
		}
	}
	eventually(t, 5*time.Second, func() bool { return cmp.Equal(listed(), runningNames()) })
	if diff := cmp.Diff(listed(), runningNames()); diff != "" {
		t.Fatalf("after the churn, registry (-got) and running instances (+want) differ:\n%s", diff)
	}
	t.Logf("%d instances started, %d running at the end, registry agrees", next, len(running))
	for _, name := range runningNames() {
		stop(name)
	}
}

func eventually(t *testing.T, d time.Duration, cond func() bool) {
	for end := time.Now().Add(d); time.Now().Before(end) && !cond(); {
		time.Sleep(20 * time.Millisecond)
	}
}
