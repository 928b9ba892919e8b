package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// grpc-go's own interoperability client and server (the module go.mod
// requires, built as tools), with the mesh between them.

var (
	soakIterations = flag.Int("interop.soak_iterations", 40, "soak iterations (rpc_soak: per thread; channel_soak: channels per thread)")
	soakThreads    = flag.Int("interop.soak_threads", 4, "soak threads")
)

var interopBuild struct {
	once           sync.Once
	client, server string
	err            error
}

// interopBinaries builds grpc-go's interop client and server once.
func interopBinaries(t *testing.T) (client, server string) {
	t.Helper()
	b := &interopBuild
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "busmesh-interop-")
		if err != nil {
			b.err = err
			return
		}
		b.client, b.server = filepath.Join(dir, "interop-client"), filepath.Join(dir, "interop-server")
		for out, pkg := range map[string]string{b.client: "google.golang.org/grpc/interop/client", b.server: "google.golang.org/grpc/interop/server"} {
			if msg, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
				b.err = fmt.Errorf("build %s: %v\n%s", pkg, err, msg)
				return
			}
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.client, b.server
}

const interopCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: interop-client
  grpc: {{grpc}}
  grpc_routes:
    "grpc.testing.": {{service}}
    "xds.service.orca.v3.": {{service}}
  timeout: 5m
`

const interopCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  target: grpc://{{target}}
`

// interopCases are the official cases that need no TLS or cloud
// credentials. pick_first_unary is left out: it checks that every answer
// names one server id, which grpc-go's interop server never fills in, so it
// fails without the mesh too.
var interopCases = []string{
	"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "empty_stream",
	"timeout_on_sleeping_server", "cancel_after_begin", "cancel_after_first_response",
	"status_code_and_message", "special_status_message", "custom_metadata",
	"unimplemented_method", "unimplemented_service", "orca_per_rpc", "orca_oob",
}

// TestInterop runs grpc-go's interop client against its interop server
// through the mesh, on every broker: each official case, then the soak
// cases with several threads (sized by -interop.soak_* flags; `make
// interop-soak` runs them large). After the soaks every call has ended at
// the adapter, and it drains at once.
func TestInterop(t *testing.T) {
	client, server := interopBinaries(t)
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			port := freePort(t)
			_, portNum, _ := strings.Cut(port, ":")
			srv := exec.Command(server, "-port", portNum)
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
			service := unique("interop")
			callee := startSidecar(t, "interop-callee", interopCalleeConfig, map[string]string{
				"id": unique("icallee"), "broker": b.url, "service": service, "target": port,
			})
			grpcAddr := freePort(t)
			startSidecar(t, "interop-caller", interopCallerConfig, map[string]string{
				"id": unique("icaller"), "broker": b.url, "service": service, "grpc": grpcAddr,
			})
			host, p, _ := strings.Cut(grpcAddr, ":")
			run := func(t *testing.T, timeout time.Duration, args ...string) {
				ctx, cancel := context.WithTimeout(t.Context(), timeout)
				defer cancel()
				// The ORCA cases need the test LB policy that reads load
				// reports, as grpc-go's interop_test.sh sets it.
				base := []string{"--server_host=" + host, "--server_port=" + p,
					`--service_config_json={"loadBalancingConfig": [{"test_backend_metrics_load_balancer": {}}]}`}
				cmd := exec.CommandContext(ctx, client, append(base, args...)...)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("interop client %v: %v\n%s", args, err, tail(out, 60000))
				}
			}
			for _, tc := range interopCases {
				t.Run(tc, func(t *testing.T) { run(t, 60*time.Second, "--test_case="+tc) })
			}
			soak := []string{
				"--soak_iterations=" + strconv.Itoa(*soakIterations),
				"--soak_num_threads=" + strconv.Itoa(*soakThreads),
				"--soak_overall_timeout_seconds=120",
				"--soak_per_iteration_max_acceptable_latency_ms=5000",
			}
			t.Run("rpc_soak", func(t *testing.T) { run(t, 150*time.Second, append(soak, "--test_case=rpc_soak")...) })
			t.Run("channel_soak", func(t *testing.T) { run(t, 150*time.Second, append(soak, "--test_case=channel_soak")...) })
			inflight := func() float64 {
				return callee.sum("busmesh_adapter_inflight_requests", map[string]string{"service": service})
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("adapter: in flight %v, reaped %v", inflight(),
						callee.metric(`busmesh_adapter_calls_reaped_total{service="`+service+`"}`))
				}
			})
			eventually(t, time.Second, "the adapter's in-flight calls back to 0 after the client exits", func() bool {
				return inflight() == 0
			})
			// A leaving adapter keeps taking calls for its goodbye to
			// arrive: 250 ms, 1 s on Kafka (broker.Latent).
			limit := 2 * time.Second
			if b.name == "kafka" {
				limit += time.Second
			}
			start := time.Now()
			callee.stop(syscall.SIGTERM)
			if d := time.Since(start); d > limit {
				t.Errorf("the adapter drained in %v after the soaks, want under %v", d, limit)
			}
		})
	}
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
