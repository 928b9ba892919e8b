package rabbitmq_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/broker/brokertest"
	"github.com/busmesh/busmesh/broker/rabbitmq"
	"github.com/busmesh/busmesh/internal/testutil"
)

// serverName is the only name the terminator's certificate carries: a
// client dialing 127.0.0.1 must say tls_server_name=rabbitmq.test.
const serverName = "rabbitmq.test"

// tlsTerminator is a TLS listener on loopback that forwards the bytes of
// each connection to target in the clear: the TLS listener the shared
// RabbitMQ does not have, without reconfiguring it.
func tlsTerminator(t *testing.T, cert tls.Certificate, target string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // until either side closes
		dst.Close()
		src.Close()
		track(dst, false)
		track(src, false)
	}
	wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			track(in, true)
			track(out, true)
			wg.Go(func() { pipe(in, out) })
			wg.Go(func() { pipe(out, in) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// amqpsSetup starts a TLS terminator in front of a proxy to the test
// RabbitMQ, and returns its address, the proxy, and the CA that issued its
// certificate.
func amqpsSetup(t *testing.T) (addr string, proxy *brokertest.Proxy, ca *testutil.CA) {
	t.Helper()
	proxy = brokertest.NewProxy(t, testAddr(t))
	ca = testutil.NewCA(t, "busmesh-test-ca")
	return tlsTerminator(t, ca.Server(t, serverName), proxy.Addr()), proxy, ca
}

// TestAMQPS: amqps:// with tls_ca and tls_server_name carries a request
// and its reply through a TLS listener; a client that trusts another CA,
// or names no server name the certificate has, is refused at Dial with an
// error that says why.
func TestAMQPS(t *testing.T) {
	addr, _, ca := amqpsSetup(t)
	url := fmt.Sprintf("amqps://guest:guest@%s/?tls_ca=%s&tls_server_name=%s", addr, ca.File, serverName)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	server, client := dial(t, url), dial(t, url)
	defer server.Close()
	defer client.Close()
	subject := fmt.Sprintf("busmesh.amqps-test.%d", time.Now().UnixNano())
	inbox := subject + ".inbox"
	if _, err := server.QueueSubscribe(ctx, subject, "svc", func(ctx context.Context, req []byte) {
		if err := server.Publish(ctx, inbox, append([]byte("re: "), req...)); err != nil {
			t.Errorf("reply: %v", err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	replies := make(chan string, 1)
	if _, err := client.Subscribe(ctx, inbox, func(_ context.Context, d []byte) { replies <- string(d) }); err != nil {
		t.Fatal(err)
	}
	if err := client.Publish(ctx, subject, []byte("ping over TLS")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-replies:
		if got != "re: ping over TLS" {
			t.Errorf("reply = %q, want %q", got, "re: ping over TLS")
		}
	case <-ctx.Done():
		t.Fatal("no reply through the TLS listener")
	}

	refused := []struct {
		name, url, want string
		is              func(error) bool
	}{
		{"another CA", fmt.Sprintf("amqps://guest:guest@%s/?tls_ca=%s&tls_server_name=%s", addr, testutil.NewCA(t, "other-ca").File, serverName),
			"does not verify against tls_ca", func(err error) bool {
				var e x509.UnknownAuthorityError
				return errors.As(err, &e)
			}},
		{"no server name", fmt.Sprintf("amqps://guest:guest@%s/?tls_ca=%s", addr, ca.File),
			"tls_server_name", func(err error) bool {
				var e x509.HostnameError
				return errors.As(err, &e)
			}},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			dctx, dcancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer dcancel()
			conn, err := rabbitmq.Dial(dctx, c.url, nil)
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			t.Logf("Dial: %v", err)
			if !c.is(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Dial = %v, want a certificate error that mentions %q", err, c.want)
			}
			if strings.Contains(err.Error(), "guest:guest") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

// TestConformanceAMQPS runs the conformance suite over amqps://, through
// the TLS terminator; Restart cuts the connections behind it.
func TestConformanceAMQPS(t *testing.T) {
	addr, proxy, ca := amqpsSetup(t)
	url := fmt.Sprintf("amqps://guest:guest@%s/?tls_ca=%s&tls_server_name=%s", addr, ca.File, serverName)
	t.Run("rabbitmq-amqps", func(t *testing.T) {
		brokertest.Run(t, brokertest.Features{
			Ordered: true,
			Returns: true,
			Restart: func(*testing.T) { proxy.Cut() },
		}, func(t *testing.T) broker.Broker { return dial(t, url) })
	})
}

// TestTLSOptions: the TLS options are checked before dialing, by name.
func TestTLSOptions(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t, "ca")
	notPEM := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(notPEM, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, want string
	}{
		{"plain amqp", "amqp://guest:s3cret-pw@127.0.0.1:1/?tls_ca=" + ca.File, `option tls_ca="` + ca.File + `": only with amqps://`},
		{"missing CA file", "amqps://guest:s3cret-pw@127.0.0.1:1/?tls_ca=/nonexistent.pem", `option tls_ca="/nonexistent.pem": want a readable PEM file`},
		{"CA file without certificates", "amqps://guest:s3cret-pw@127.0.0.1:1/?tls_ca=" + notPEM, "found none"},
		{"cert without key", "amqps://guest:s3cret-pw@127.0.0.1:1/?tls_cert=" + ca.File, "tls_cert and tls_key go together"},
		{"twice", "amqps://guest:s3cret-pw@127.0.0.1:1/?tls_ca=" + ca.File + "&cacertfile=" + ca.File, "options tls_ca and cacertfile"},
		{"empty server name", "amqps://guest:s3cret-pw@127.0.0.1:1/?tls_server_name=", `option tls_server_name=""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, err := rabbitmq.Dial(ctx, tt.url, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Dial = %v, want an error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-pw") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}
