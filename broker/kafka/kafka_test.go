package kafka_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	bkafka "github.com/busmesh/busmesh/broker/kafka"
	"github.com/busmesh/busmesh/internal/testutil"
)

// TestConformance runs the suite against an in-process kfake cluster, or
// against the cluster in BUSMESH_TEST_KAFKA_BROKERS (host:port,host:port).
func TestConformance(t *testing.T) {
	t.Run("kafka", func(t *testing.T) {
		if brokers := os.Getenv("BUSMESH_TEST_KAFKA_BROKERS"); brokers != "" {
			brokertest.Require(t, "kafka", strings.Split(brokers, ",")[0],
				"docker run -d -p 9092:9092 apache/kafka:latest")
			brokertest.Run(t, brokertest.Features{},
				func(t *testing.T) broker.Broker { return dial(t, "kafka://"+brokers) })
			return
		}
		c := startCluster(t)
		brokertest.Run(t, brokertest.Features{Restart: c.cut},
			func(t *testing.T) broker.Broker { return dial(t, c.url) })
	})
}

func dial(t testing.TB, url string) broker.Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// BUSMESH_TEST_KAFKA_DEBUG=1 shows the backend's logs as they come;
	// without it a failed test shows their tail, so a failure seen once
	// (in CI, under load) can be read afterwards.
	var w io.Writer = os.Stderr
	if os.Getenv("BUSMESH_TEST_KAFKA_DEBUG") == "" {
		log, n := &testutil.Buffer{Keep: logTail}, dials.Add(1)
		w = log
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("the end of the log of connection %d (%s):\n%s", n, broker.Redact(url), log.Tail(logTail))
			}
		})
	}
	level := slog.LevelDebug
	if _, bench := t.(*testing.B); bench {
		level = slog.LevelInfo // a benchmark measures the backend, not its debug log
	}
	lg := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
	b, err := broker.Open(ctx, url, lg)
	if err != nil {
		t.Fatalf("Open(%s) = %v", broker.Redact(url), err)
	}
	return b
}

// dials numbers the connections dial opens, to tell their logs apart.
var dials atomic.Int32

// logTail is how much of a backend's log, in bytes, a failed test shows.
const logTail = 48 << 10

// cluster is a kfake cluster whose brokers are reached through proxies:
// kfake advertises the proxies' addresses, so every connection a client
// makes, bootstrap or not, goes through one, and cut drops them all as a
// broker restart would, while the cluster keeps its topics and groups.
type cluster struct {
	url string
	kc  *kfake.Cluster

	mu      sync.Mutex
	proxies []*brokertest.Proxy
}

func startCluster(t testing.TB, opts ...kfake.Opt) *cluster {
	t.Helper()
	c := &cluster{}
	listen := func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		p := brokertest.NewProxy(t, ln.Addr().String())
		c.mu.Lock()
		c.proxies = append(c.proxies, p)
		c.mu.Unlock()
		return advertised{ln, p.Addr()}, nil
	}
	kc, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.ListenFn(listen)}, opts...)...)
	if err != nil {
		t.Fatalf("kfake.NewCluster = %v", err)
	}
	t.Cleanup(kc.Close)
	c.kc = kc
	c.url = "kafka://" + c.proxies[0].Addr()
	return c
}

func (c *cluster) cut(*testing.T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.proxies {
		p.Cut()
	}
}

// silence holds every connection to the cluster open without a byte
// through, as a network partition does.
func (c *cluster) silence() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.proxies {
		p.Silence()
	}
}

// advertised is a listener that reports another address: the one kfake
// puts in its metadata.
type advertised struct {
	net.Listener
	addr string
}

func (l advertised) Addr() net.Addr { return tcpAddr(l.addr) }

type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

func TestDialUnreachable(t *testing.T) {
	// A port nobody listens on: take a free one and release it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	for _, url := range []string{
		"kafka://user:secret@" + addr,
		"kafka://user:secret@" + addr + "?sasl=scram-sha-512",
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		start := time.Now()
		b, err := broker.Open(ctx, url, nil)
		cancel()
		if err == nil {
			b.Close()
			t.Fatalf("Open(%s) succeeded", broker.Redact(url))
		}
		var ce *broker.ConnectError
		if !errors.As(err, &ce) {
			t.Fatalf("Open(unreachable) = %v, want *broker.ConnectError", err)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error %q shows the password", err)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("error %q does not name the address %s", err, addr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Open took %v, want under 5s", d)
		}
	}
}

func TestDialSilentBroker(t *testing.T) {
	// Something accepts connections but never answers: Open must give up
	// at ctx's deadline with a reason.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer l.Close()
	wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = broker.Open(ctx, "kafka://"+l.Addr().String(), nil)
	if err == nil || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("Open(silent broker) = %v, want an error naming %s", err, l.Addr())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v with a 1s deadline", d)
	}
}

func TestDialRejectsBadURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := bkafka.Dial(ctx, "kafka://u:topsecret@127.0.0.1:9092?partitions=lots&bogus=1", nil)
	if err == nil {
		t.Fatal("Dial with bad options succeeded")
	}
	for _, want := range []string{"partitions", `"lots"`, "bogus"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error %q shows the password", err)
	}
}
