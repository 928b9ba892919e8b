package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/busmesh/busmesh/broker"
	bnats "github.com/busmesh/busmesh/broker/nats"
	"github.com/busmesh/busmesh/internal/config"
)

// checkTimeout bounds each network check.
const checkTimeout = 5 * time.Second

// checker prints one line per check, "[ok]" or "[FAIL]" with the fix under
// it, as `linkerd check` does, and counts the failures.
type checker struct {
	out    io.Writer
	failed int
	passed int
}

func (c *checker) ok(format string, args ...any) {
	c.passed++
	fmt.Fprintf(c.out, "[ok]   %s\n", fmt.Sprintf(format, args...))
}

func (c *checker) skip(format string, args ...any) {
	fmt.Fprintf(c.out, "[skip] %s\n", fmt.Sprintf(format, args...))
}

func (c *checker) fail(fix string, format string, args ...any) {
	c.failed++
	fmt.Fprintf(c.out, "[FAIL] %s\n", fmt.Sprintf(format, args...))
	for line := range strings.SplitSeq(fix, "\n") {
		fmt.Fprintf(c.out, "       %s\n", line)
	}
}

func (c *checker) result() error {
	fmt.Fprintf(c.out, "\n%d ok, %d failed\n", c.passed, c.failed)
	if c.failed > 0 {
		return exitError{code: exitFailed}
	}
	return nil
}

func newCheckCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Check a sidecar's setup: config, broker, ports, application, health check",
		Long: `Check what a sidecar needs before starting it, one line per check with the
fix under each failure: the config is valid (BUSMESH_* variables included),
the broker answers with the given credentials, the listen ports are free (or
held by this very sidecar, running), the adapter's application answers, and
its health check passes.

Exit status: 0 when every check passed, 1 when one failed, 2 when the
command line is wrong.`,
		Example: `  busmesh check --config deploy/examples/quickstart/callee.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError{errors.New("busmesh check: --config FILE is required")}
			}
			c := &checker{out: cmd.OutOrStdout()}
			runChecks(cmd.Context(), c, file, true)
			return c.result()
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "sidecar config file (YAML)")
	return cmd
}

// runChecks checks the sidecar config in file: with online, also the
// broker, the application and its health check.
func runChecks(ctx context.Context, c *checker, file string, online bool) *config.Config {
	cfg, err := config.Load(file)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			c.fail("fix the keys above (the README's Configuration table lists them); then run this again",
				"config %s: %d problem(s)\n       %s", file, len(ce.Problems), problemLines(ce))
		} else {
			c.fail("check the path: --config names the sidecar's YAML file", "config %s: %v", file, err)
		}
		c.skip("broker, ports, application: the config must be valid first")
		return nil
	}
	c.ok("config %s is valid (sidecar %s, mesh %s)", file, cfg.ID, cfg.Mesh)
	if online {
		checkBrokerReachable(ctx, c, cfg)
		if cfg.Ambassador != nil {
			checkMirrorBrokers(ctx, c, cfg.Ambassador.Brokers)
		}
	}
	running := runningHere(cfg)
	for _, l := range listeners(cfg) {
		switch err := checkPorts([]listener{l}, nil); {
		case err == nil:
			c.ok("port %s %s is free", l.key, l.addr)
		case running:
			c.ok("port %s %s is held by this sidecar (%s, running: its admin port answers)", l.key, l.addr, cfg.ID)
		default:
			var pe *portInUseError
			errors.As(err, &pe)
			_, port, _ := net.SplitHostPort(l.addr)
			c.fail(fmt.Sprintf("stop what listens there (ss -ltnp 'sport = :%s' names it; another busmesh?), or set %s to a free port", port, l.key),
				"port %s %s: %s", l.key, l.addr, listenReason(pe.err))
		}
	}
	if cfg.Adapter == nil {
		c.skip("application: no adapter section")
		return cfg
	}
	if !online {
		return cfg
	}
	checkApp(ctx, c, cfg.Adapter)
	return cfg
}

func problemLines(e *config.Error) string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n       ")
}

// runningHere reports whether this very sidecar is running: its admin port
// answers /info with its id.
func runningHere(cfg *config.Config) bool {
	if cfg.Admin == "" {
		return false
	}
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + cfg.Admin + "/info")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode == http.StatusOK && strings.Contains(string(body), fmt.Sprintf("%q", cfg.ID))
}

func checkBrokerReachable(ctx context.Context, c *checker, cfg *config.Config) {
	shown := broker.Redact(cfg.Broker)
	if cfg.Broker == "embedded" || strings.HasPrefix(cfg.Broker, "embedded://") {
		if !bnats.HasEmbedded {
			c.fail(bnats.NoEmbeddedFix, "broker %s: %s", shown, bnats.NoEmbedded)
			return
		}
		c.ok("broker %s: started inside the sidecar, nothing to reach", shown)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	start := time.Now()
	b, err := broker.Open(ctx, cfg.Broker, nil)
	if err != nil {
		c.fail(brokerFix(cfg.Broker, err), "broker %s: %v", shown, brokerReason(err))
		return
	}
	elapsed := time.Since(start)
	_ = b.Close() // a check's connection; its close error changes nothing
	c.ok("broker %s answers with the given credentials (connected in %v)", shown, elapsed.Round(time.Millisecond))
}

// checkMirrorBrokers checks that each of ambassador.brokers answers: the
// sidecar opens them at start and will not start without them.
func checkMirrorBrokers(ctx context.Context, c *checker, urls map[string]string) {
	for _, name := range slices.Sorted(maps.Keys(urls)) {
		raw, shown := urls[name], broker.Redact(urls[name])
		octx, cancel := context.WithTimeout(ctx, checkTimeout)
		start := time.Now()
		b, err := broker.Open(octx, raw, nil)
		cancel()
		if err != nil {
			c.fail(fmt.Sprintf("is the broker running? or fix ambassador.brokers.%s (the sidecar does not start without it)", name),
				"mirror broker %s %s: %v", name, shown, brokerReason(err))
			continue
		}
		_ = b.Close() // a check's connection; its close error changes nothing
		c.ok("mirror broker %s %s answers (connected in %v)", name, shown, time.Since(start).Round(time.Millisecond))
	}
}

// brokerReason drops the URL an Open error repeats: the line names it.
func brokerReason(err error) string {
	var ce *broker.ConnectError
	if errors.As(err, &ce) {
		return ce.Err.Error()
	}
	return err.Error()
}

func brokerFix(raw string, err error) string {
	s := strings.ToLower(err.Error())
	u, _ := url.Parse(raw)
	host := ""
	if u != nil {
		host = u.Host
	}
	envNote := ""
	if _, set := os.LookupEnv("BUSMESH_BROKER"); set {
		envNote = " (BUSMESH_BROKER is set and overrides the file's broker)"
	}
	switch {
	case strings.Contains(s, "auth") || strings.Contains(s, "access_refused") || strings.Contains(s, "403") || strings.Contains(s, "sasl") || strings.Contains(s, "credentials"):
		return "check the user and password in the broker URL" + envNote
	case strings.Contains(s, "refused") || strings.Contains(s, "timeout") || strings.Contains(s, "deadline") || strings.Contains(s, "no broker answered") || strings.Contains(s, "no servers"):
		return fmt.Sprintf("is the broker running at %s? (NATS: nats-server -a 127.0.0.1 -p 4222 -js; RabbitMQ: rabbitmq-server -detached); "+
			"or set broker to one that is%s", host, envNote)
	}
	return "check the broker URL" + envNote
}

// checkApp checks that the adapter's application answers, and its health
// check passes.
func checkApp(ctx context.Context, c *checker, a *config.Adapter) {
	u, _ := url.Parse(a.Target) // valid: the config passed
	fix := fmt.Sprintf("start the application on %s, or set adapter.target to where it listens", u.Host)
	var tlsCfg *tls.Config // https:// and grpcs://, as the adapter speaks it
	if u.Scheme == "https" || u.Scheme == "grpcs" {
		var err error
		if tlsCfg, err = a.TLS.ClientConfig(u.Hostname()); err != nil {
			c.fail("fix adapter.tls", "application %s: %v", a.Target, err)
			return
		}
	}
	failed := func(err error) {
		if tlsFailure(err) {
			c.fail("check adapter.tls: ca (the roots its certificate chains to), server_name (a name its certificate carries), cert and key (a client certificate it accepts)",
				"application %s: TLS: %v", a.Target, err)
		} else {
			c.fail(fix, "application %s: %s", a.Target, dialReason(err.Error()))
		}
		c.skip("health check: the application must answer first")
	}
	if config.IsGRPCTarget(a.Target) {
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "443") // grpc-go's default
		}
		if err := dialGRPCApp(ctx, host, tlsCfg); err != nil {
			failed(err)
			return
		}
		c.ok("application %s accepts connections", a.Target)
		if h := a.Health; h != nil && h.GRPC {
			checkGRPCHealth(ctx, c, host, tlsCfg, h.GRPCService)
		} else {
			c.skip("health check: adapter.health is not set")
		}
		return
	}
	transport := &http.Transport{TLSClientConfig: tlsCfg}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: checkTimeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(strings.TrimSuffix(a.Target, "/") + "/")
	if err != nil {
		failed(err)
		return
	}
	resp.Body.Close()
	c.ok("application %s answers (GET / %d)", a.Target, resp.StatusCode)
	h := a.Health
	if h == nil || h.HTTP == "" {
		c.skip("health check: adapter.health is not set")
		return
	}
	hc := &http.Client{Transport: transport, Timeout: h.Timeout.D(), CheckRedirect: client.CheckRedirect}
	resp, err = hc.Get(strings.TrimSuffix(a.Target, "/") + h.HTTP)
	if err != nil {
		c.fail(fmt.Sprintf("the application must answer GET %s within adapter.health.timeout (%v)", h.HTTP, h.Timeout.D()),
			"health check GET %s: %s", h.HTTP, dialReason(err.Error()))
		return
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		c.fail(fmt.Sprintf("the adapter counts 2xx and 3xx as healthy: fix the application's %s, or set adapter.health.http to its health path", h.HTTP),
			"health check GET %s answered %d", h.HTTP, resp.StatusCode)
		return
	}
	c.ok("health check GET %s answers %d", h.HTTP, resp.StatusCode)
}

// dialGRPCApp connects to a gRPC application as the adapter does: over
// TLS when tlsCfg is set, with the handshake, h2 agreed by ALPN (grpc-go
// refuses a server that agrees to none), and a moment's read, because in
// TLS 1.3 a server refuses a client certificate only after the client's
// side of the handshake is done.
func dialGRPCApp(ctx context.Context, host string, tlsCfg *tls.Config) error {
	d := &net.Dialer{Timeout: checkTimeout}
	if tlsCfg == nil {
		conn, err := d.DialContext(ctx, "tcp", host)
		if err == nil {
			conn.Close()
		}
		return err
	}
	cfg := tlsCfg.Clone()
	cfg.NextProtos = []string{"h2"}
	conn, err := (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	defer conn.Close()
	tc := conn.(*tls.Conn)
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		return fmt.Errorf("tls: the application agreed to no ALPN protocol %q, and gRPC needs h2 (a TLS proxy in front of a gRPC server must offer it)", p)
	}
	// A server that took the handshake sends its HTTP/2 settings or
	// nothing yet; one that refused the certificate sends an alert.
	_ = tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b [1]byte
	if _, err := tc.Read(b[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}

// tlsFailure tells whether err is the TLS handshake's or the certificate
// check's, which adapter.tls mends, rather than the network's.
func tlsFailure(err error) bool {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
	)
	return errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &alert) || errors.As(err, &verify) || strings.Contains(err.Error(), "tls: ")
}

func checkGRPCHealth(ctx context.Context, c *checker, host string, tlsCfg *tls.Config, service string) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(host, grpc.WithTransportCredentials(creds))
	if err != nil {
		c.fail("check adapter.target", "health check grpc.health.v1 on %s: %v", host, err)
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		c.fail("the application must serve grpc.health.v1.Health (google.golang.org/grpc/health), or drop adapter.health.grpc",
			"health check grpc.health.v1 on %s: %v", host, err)
		return
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		c.fail("the application reports itself not serving", "health check grpc.health.v1 on %s: %s", host, resp.Status)
		return
	}
	c.ok("health check grpc.health.v1 on %s: SERVING", host)
}

// checkOnly is `busmesh sidecar --check`: the config and its ports, offline.
func checkOnly(cmd *cobra.Command, file string) error {
	c := &checker{out: cmd.OutOrStdout()}
	if cfg := runChecks(cmd.Context(), c, file, false); cfg == nil {
		_ = c.result() // prints the tally; an invalid config is a usage error
		return exitError{code: exitUsage}
	}
	return c.result()
}
