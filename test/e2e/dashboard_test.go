package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/broker/brokertest"
	"github.com/busmesh/busmesh/internal/admin"
	"github.com/busmesh/busmesh/internal/telemetry"
	"github.com/busmesh/busmesh/internal/testutil"
)

var screenshot = flag.String("screenshot", "", "where TestDashboard writes its screenshot (default: the test's temp dir; docs/dashboard.png is made with -screenshot ../../docs/dashboard.png)")

// devMesh is a running `busmesh dev` process and the addresses it printed.
type devMesh struct {
	admin, shared, service string
	broker                 string // the "join with" URL
	stderr                 *testutil.Buffer
}

// startDev runs `busmesh dev` on the embedded broker with free ports and
// reads its addresses from what it prints; the process is stopped with
// SIGINT when the test ends.
func startDev(t *testing.T, extra ...string) *devMesh {
	t.Helper()
	args := append([]string{"dev", "--http", freePort(t), "--service-port", freePort(t), "--admin", freePort(t)}, extra...)
	cmd := exec.Command(binary, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m := &devMesh{stderr: &testutil.Buffer{}}
	cmd.Stderr = m.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	var reader sync.WaitGroup
	reader.Go(func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	})
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("busmesh dev did not stop within 15s of SIGINT")
		}
		reader.Wait()
		if t.Failed() {
			t.Logf("--- busmesh dev log ---\n%s", m.stderr.String())
		}
	})
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("busmesh dev ended its output early\n%s", m.stderr.String())
			}
			f := strings.Fields(l)
			switch {
			case len(f) >= 2 && f[0] == "ambassador":
				m.shared = f[1]
			case len(f) >= 3 && strings.HasPrefix(f[1], "(service"):
				m.service = f[0]
			case len(f) >= 2 && f[0] == "admin":
				m.admin = f[1]
			case strings.HasPrefix(l, "Other sidecars join with: broker: "):
				m.broker = strings.TrimPrefix(l, "Other sidecars join with: broker: ")
			case strings.HasPrefix(l, "Press Ctrl-C"):
				go func() { // keep draining so the process never blocks on stdout
					for range lines {
					}
				}()
				if m.admin == "" || m.shared == "" || m.service == "" {
					t.Fatalf("busmesh dev did not print its addresses (admin %q, shared %q, service %q)", m.admin, m.shared, m.service)
				}
				return m
			}
		case <-timeout:
			t.Fatalf("busmesh dev was not ready within 30s\n%s", m.stderr.String())
		}
	}
}

// requireChromium returns the Chromium binary: a missing one skips the test
// outside CI and fails it in CI (.ci/run installs it).
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed; .ci/run installs it (apt-get install -y chromium)")
	}
	t.Skip("chromium is not installed: apt-get install -y chromium")
	return ""
}

// TestDashboard opens the admin port's dashboard in headless Chromium
// against a running `busmesh dev` under load: the demo service and its
// instance show, the edge's request rate rises above zero within 3s of the
// page opening, and injected mesh errors appear in the errors panel.
func TestDashboard(t *testing.T) {
	chrome := requireChromium(t)
	m := startDev(t)

	// Load: a steady stream of calls through the demo service's port.
	loadCtx, stopLoad := context.WithCancel(t.Context())
	var load sync.WaitGroup
	defer func() { stopLoad(); load.Wait() }()
	for range 2 {
		load.Go(func() {
			for loadCtx.Err() == nil {
				req, _ := http.NewRequestWithContext(loadCtx, "GET", "http://"+m.service+"/hello", nil)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}

	ctx := newBrowser(t, chrome, 90*time.Second)

	url := "http://" + m.admin + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s in chromium: %v", url, err)
	}
	// From the page's first figures (the first scrape of the admin port).
	waitJS(t, ctx, 10*time.Second, "the page's first scrape", `Number(document.body.dataset.samples || 0) >= 1`)
	opened := time.Now()

	// The demo service and its instance, from discovery.
	waitJS(t, ctx, 10*time.Second, "a healthy instance dev of service demo",
		`!!document.querySelector('#services [data-service="demo"] tr[data-instance="dev"][data-healthy="true"]')`)

	// The edge's request rate rises above zero within 3s of the first scrape.
	var rate float64
	for {
		var err error
		rate, err = chromedp.Run(ctx, chromedp.Evaluate[float64](
			`Number((document.querySelector('#edges tr[data-service="demo"]') || {dataset: {}}).dataset.rps || 0)`))
		if err != nil {
			t.Fatal(err)
		}
		if rate > 0 {
			break
		}
		if time.Since(opened) > 3*time.Second {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("the edge dev → demo shows %v requests/s %v after the page opened, want above zero within 3s; the page reads:\n%s",
				rate, time.Since(opened), text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("edge dev → demo at %.1f requests/s, %v after the page opened", rate, time.Since(opened).Round(time.Millisecond))

	// Mesh errors: a call to a service nobody serves (503
	// no-healthy-instances) and a bad X-Busmesh-Timeout (400 bad-timeout).
	for _, inject := range []struct{ host, timeout string }{{"nosuch", ""}, {"demo", "soon"}} {
		req, _ := http.NewRequest("GET", "http://"+m.shared+"/x", nil)
		req.Host = inject.host
		if inject.timeout != "" {
			req.Header.Set("X-Busmesh-Timeout", inject.timeout)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Busmesh-Error") == "" {
			t.Fatalf("call to %s (timeout %q) answered %d without X-Busmesh-Error", inject.host, inject.timeout, resp.StatusCode)
		}
	}
	for _, reason := range []string{"no-healthy-instances", "bad-timeout"} {
		waitJS(t, ctx, 10*time.Second, "the errors panel to show "+reason,
			`!!document.querySelector('#errors [data-reason="`+reason+`"]') && !!document.querySelector('#events li[data-reason="`+reason+`"]')`)
	}

	// A picture for the README: dark theme, a few seconds of history.
	time.Sleep(4 * time.Second)
	if err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[any](`document.documentElement.dataset.theme = 'dark'`)(ctx, t)
			return err
		}),
		chromedp.Sleep(1200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := *screenshot
	if path == "" {
		path = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// newBrowser starts a headless chromium for the test and returns the
// context of its first tab, which ends after d.
func newBrowser(t *testing.T, chrome string, d time.Duration) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 1000),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(string, ...any) {}))
	t.Cleanup(cancelCtx)
	ctx, cancelTimeout := context.WithTimeout(ctx, d)
	t.Cleanup(cancelTimeout)
	return ctx
}

// waitJS polls a JavaScript expression in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, d time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var text string
			text, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("timed out after %v waiting for %s; the page reads:\n%s", d, what, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const dashboardBrokersConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: web
  upstreams:
    ledger: {{port}}
  brokers:
    second: {{second}}
  services:
    ledger:
      brokers: {primary: 50, second: 50}
`

// TestDashboardBrokers: a caller's further broker connection
// (ambassador.brokers) shows on its dashboard, in /info and in
// busmesh_broker_connected{connection="second"}, beside the primary's, and
// each follows that connection: down when its broker goes, up when it is
// back.
func TestDashboardBrokers(t *testing.T) {
	chrome := requireChromium(t)
	primary := brokers(t)[0] // nats
	requireBroker(t, primary)
	proxy := brokertest.NewProxy(t, strings.TrimPrefix(primary.url, "nats://"))
	caller := startSidecar(t, "caller", dashboardBrokersConfig, map[string]string{
		"id": unique("web"), "broker": primary.url, "port": freePort(t), "second": "nats://" + proxy.Addr(),
	})
	info := func() admin.Info {
		t.Helper()
		resp, err := http.Get("http://" + caller.admin + "/info")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var in admin.Info
		if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
			t.Fatal(err)
		}
		return in
	}
	state := func(want string) func() bool {
		return func() bool {
			in := info()
			return len(in.Brokers) == 1 && in.Brokers[0].Name == "second" && in.Brokers[0].State == want &&
				in.Brokers[0].Broker == "nats://"+proxy.Addr() && in.BrokerState == "connected"
		}
	}
	eventually(t, 5*time.Second, "/info to list the second broker connected", state("connected"))
	connected := func(conn string) float64 {
		return caller.metric(fmt.Sprintf(`busmesh_broker_connected{broker="nats",connection=%q}`, conn))
	}
	if p, s := connected("primary"), connected("second"); p != 1 || s != 1 {
		t.Errorf("busmesh_broker_connected: primary %v, second %v; want 1 and 1", p, s)
	}
	// Discovery over the second connection (it asks for ledger's
	// instances there) counts as its traffic.
	eventually(t, 10*time.Second, "messages counted on the second connection", func() bool {
		return caller.metric(`busmesh_broker_messages_total{connection="second",operation="publish"}`) > 0
	})

	ctx := newBrowser(t, chrome, 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+caller.admin+"/")); err != nil {
		t.Fatal(err)
	}
	shows := func(cls string) string {
		return `!!document.querySelector('#brokers .broker[data-name="second"][data-state="` + cls + `"]') && ` +
			`document.querySelector('#broker').dataset.state === 'ok'`
	}
	waitJS(t, ctx, 10*time.Second, "the second broker shown connected", shows("ok"))

	proxy.Down()
	eventually(t, 10*time.Second, "/info to show the second broker disconnected", state("disconnected"))
	if p, s := connected("primary"), connected("second"); p != 1 || s != 0 {
		t.Errorf("with the second broker gone, busmesh_broker_connected: primary %v, second %v; want 1 and 0", p, s)
	}
	waitJS(t, ctx, 10*time.Second, "the second broker shown disconnected", shows("bad"))

	proxy.Up()
	eventually(t, 20*time.Second, "/info to show the second broker back", state("connected"))
	waitJS(t, ctx, 10*time.Second, "the second broker shown connected again", shows("ok"))
}

// TestDashboardGRPCSuccess: the dashboard tells successes from failures by
// the class label, as busmesh top (telemetry.Success) and the PromQL in
// docs/monitoring.md do, so gRPC calls (code "", grpc_code "Unavailable")
// count by their code's class: Unavailable and DeadlineExceeded fail,
// NotFound, Canceled, ResourceExhausted and Aborted do not. It holds on the
// edges, the served services and the totals. The calls are counted on an
// admin port's metrics with the labels the ambassador's and the adapter's
// record functions give them.
func TestDashboardGRPCSuccess(t *testing.T) {
	chrome := requireChromium(t)
	metrics := telemetry.NewMetrics()
	s, err := admin.Start(admin.Options{Addr: "127.0.0.1:0", Sidecar: "web-1", Broker: "nats://127.0.0.1:4222",
		Metrics: metrics, Caller: "web"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })

	ctx := newBrowser(t, chrome, 60*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+s.Addr()+"/")); err != nil {
		t.Fatal(err)
	}
	// The window starts before the calls: the first scrape sees none.
	waitJS(t, ctx, 10*time.Second, "the page's first scrape", `Number(document.body.dataset.samples || 0) >= 1`)

	type call struct {
		status int        // HTTP
		code   codes.Code // gRPC, when grpc
		grpc   bool
		n      int
	}
	grpcCall := func(c codes.Code, n int) call { return call{code: c, grpc: true, n: n} }
	every := []call{grpcCall(codes.Code(17), 1)} // a code past the known ones
	for c := range codes.Code(17) {
		every = append(every, grpcCall(c, 1))
	}
	edges := map[string][]call{
		// The reviewer's mix: 10 % succeed.
		"ledger":  {grpcCall(codes.OK, 10), grpcCall(codes.Unavailable, 80), grpcCall(codes.DeadlineExceeded, 10)},
		"orders":  every,
		"catalog": {{status: 200, n: 3}, {status: 404, n: 1}, {status: 503, n: 1}},
	}
	want := map[string]float64{}
	var ok, total int
	for service, calls := range edges {
		var sok, stotal int
		for _, c := range calls {
			protocol, code, grpcCode := telemetry.ProtocolHTTP, telemetry.Code(c.status), ""
			if c.grpc {
				protocol, code, grpcCode = telemetry.ProtocolGRPC, "", telemetry.GRPCCode(c.code)
			}
			class := telemetry.Class(c.status, c.grpc, c.code)
			metrics.AmbassadorRequests.WithLabelValues("web", service, "i1", protocol, class, code, grpcCode).Add(float64(c.n))
			if service == "ledger" {
				metrics.AdapterRequests.WithLabelValues("web", service, "i1", protocol, class, code, grpcCode).Add(float64(c.n))
			}
			stotal += c.n
			if telemetry.Success(class) {
				sok += c.n
			}
		}
		want[service] = float64(sok) / float64(stotal)
		ok, total = ok+sok, total+stotal
	}
	if want["ledger"] != 0.1 {
		t.Fatalf("telemetry counts %v of the ledger calls as successes, want 10 %%", want["ledger"])
	}

	const shown = `({
		edges: Object.fromEntries([...document.querySelectorAll('#edges tr[data-edge]')].map((r) => [r.dataset.service, Number(r.dataset.success)])),
		served: Object.fromEntries([...document.querySelectorAll('#served tr[data-served]')].map((r) => [r.dataset.served, Number(r.dataset.success)])),
		total: Number(document.getElementById('kpi-success').dataset.success),
	})`
	type figures struct {
		Edges  map[string]float64 `json:"edges"`
		Served map[string]float64 `json:"served"`
		Total  float64            `json:"total"`
	}
	near := func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
	matches := func(f figures) bool {
		if len(f.Edges) != len(want) || len(f.Served) != 1 || !near(f.Served["ledger"], want["ledger"]) ||
			!near(f.Total, float64(ok)/float64(total)) {
			return false
		}
		for service, w := range want {
			if !near(f.Edges[service], w) {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := chromedp.Run(ctx, chromedp.Evaluate[figures](shown))
		if err != nil {
			t.Fatal(err)
		}
		if matches(f) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dashboard shows success %v on the edges, %v served and %v in total; want %v on the edges (as telemetry.Success counts), ledger %v served, %v in total",
				f.Edges, f.Served, f.Total, want, want["ledger"], float64(ok)/float64(total))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
