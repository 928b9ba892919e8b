package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/test/testpb"
)

const grpcCallerConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: grpc-caller
  grpc: {{grpc}}
  grpc_routes:
    "busmesh.test.v1.Echo/ClientStream": {{service}}
  timeout: 10s
`

const grpcCalleeConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
adapter:
  service: {{service}}
  target: grpc://{{target}}
`

// grpcMesh is a gRPC caller, the ambassador's gRPC port, an adapter and a
// real grpc-go server behind it.
type grpcMesh struct {
	service        string
	caller, callee *sidecar
	client         testpb.EchoClient // :authority names the service
	byRoute        testpb.EchoClient // no service in :authority: grpc_routes decides
	retrying       testpb.EchoClient // as client, with a retry policy of its own
}

// clientRetries is a gRPC client's own retry policy (service config):
// UNAVAILABLE is tried up to four times.
const clientRetries = `{"methodConfig": [{"name": [{"service": "busmesh.test.v1.Echo"}], "retryPolicy": {
	"maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "0.05s", "backoffMultiplier": 2,
	"retryableStatusCodes": ["UNAVAILABLE"]}}]}`

func startGRPCMesh(t *testing.T, b brokerCase) *grpcMesh {
	t.Helper()
	return startGRPCMeshWith(t, b, binary)
}

// startEchoServer starts the gRPC test service (testpb's Echo) on a free
// loopback port, stopped when the test ends, and returns its address.
func startEchoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterEchoServer(srv, testpb.Server{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// startGRPCMeshWith is startGRPCMesh with a given busmesh binary.
func startGRPCMeshWith(t *testing.T, b brokerCase, bin string) *grpcMesh {
	t.Helper()
	echo := startEchoServer(t)

	m := &grpcMesh{service: unique("grpc")}
	grpcAddr := freePort(t)
	m.callee = startSidecarWith(t, bin, "grpc-callee", grpcCalleeConfig, map[string]string{
		"id": unique("gcallee"), "broker": b.url, "service": m.service, "target": echo,
	})
	m.caller = startSidecarWith(t, bin, "grpc-caller", grpcCallerConfig, map[string]string{
		"id": unique("gcaller"), "broker": b.url, "service": m.service, "grpc": grpcAddr,
	})
	m.connect(t, grpcAddr)
	return m
}

// connect gives m its clients of the ambassador's gRPC port at addr: one
// naming the service in :authority, one routed by the port.
func (m *grpcMesh) connect(t *testing.T, addr string) {
	dial := func(opts ...grpc.DialOption) testpb.EchoClient {
		conn, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return testpb.NewEchoClient(conn)
	}
	m.client = dial(grpc.WithAuthority(m.service + ".mesh"))
	m.byRoute = dial()
	m.retrying = dial(grpc.WithAuthority(m.service+".mesh"), grpc.WithDefaultServiceConfig(clientRetries))
}

func TestGRPC(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			m := startGRPCMesh(t, b)
			t.Run("Unary", m.testUnary)
			t.Run("StatusAndDetails", m.testStatus)
			t.Run("Deadline", m.testDeadline)
			t.Run("ServerStream", m.testServerStream)
			t.Run("ClientStream", m.testClientStream)
			t.Run("Bidi", m.testBidi)
			t.Run("HeaderFirst", m.testHeaderFirst)
			t.Run("ClientRetryPolicy", m.testClientRetries)
			t.Run("CancelMidway", m.testCancel)
			t.Run("SlowReader", m.testSlowReader)
			t.Run("CodesCounted", m.testCodesCounted)
		})
	}
}

func (m *grpcMesh) testUnary(t *testing.T) {
	ctx := metadata.AppendToOutgoingContext(testCtx(t, 10*time.Second), "x-test-color", "red", "x-test-color", "blue")
	var header, trailer metadata.MD
	resp, err := m.client.Unary(ctx, &testpb.EchoRequest{Message: "hello", Sequence: 7, Payload: make([]byte, 1000)},
		grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		t.Fatalf("Unary = %v", err)
	}
	if resp.Message != "hello" || resp.Sequence != 7 || len(resp.Payload) != 1000 {
		t.Errorf("Unary = %v, want the request echoed", resp)
	}
	if got := header.Get("x-echo-color"); len(got) != 2 || got[0] != "red" || got[1] != "blue" {
		t.Errorf("header x-echo-color = %q, want [red blue]: request metadata lost", got)
	}
	if got := header.Get("x-busmesh-instance"); len(got) != 1 || got[0] == "" {
		t.Errorf("header x-busmesh-instance = %q, want the serving instance", got)
	}
	if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "done" {
		t.Errorf("trailer x-trailer = %q, want [done]", got)
	}
}

func (m *grpcMesh) testStatus(t *testing.T) {
	check := func(t *testing.T, err error, trailer metadata.MD) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.NotFound || st.Message() != "failed as asked: boom" {
			t.Fatalf("status = %v %q, want NotFound %q", st.Code(), st.Message(), "failed as asked: boom")
		}
		details := st.Details()
		if len(details) != 1 {
			t.Fatalf("details = %v, want one", details)
		}
		if d, ok := details[0].(*testpb.EchoResponse); !ok || d.Message != "detail of boom" {
			t.Errorf("detail = %v, want EchoResponse{detail of boom}", details[0])
		}
		if trailer != nil {
			if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != "done" {
				t.Errorf("trailer x-trailer = %q, want [done] alongside the error", got)
			}
		}
	}
	fail := &testpb.EchoRequest{Message: "boom", FailCode: int32(codes.NotFound)}
	t.Run("unary", func(t *testing.T) {
		var trailer metadata.MD
		_, err := m.client.Unary(testCtx(t, 10*time.Second), fail, grpc.Trailer(&trailer))
		check(t, err, trailer)
	})
	t.Run("server-stream", func(t *testing.T) {
		s, err := m.client.ServerStream(testCtx(t, 10*time.Second), &testpb.EchoRequest{Message: "boom", Count: 3, FailCode: int32(codes.NotFound)})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err = s.Recv()
			if err != nil {
				break
			}
			n++
		}
		if n != 3 {
			t.Errorf("got %d messages before the error, want 3", n)
		}
		check(t, err, s.Trailer())
	})
	t.Run("codes", func(t *testing.T) {
		for _, code := range []codes.Code{codes.InvalidArgument, codes.PermissionDenied, codes.ResourceExhausted, codes.Internal, codes.Unavailable} {
			_, err := m.client.Unary(testCtx(t, 10*time.Second), &testpb.EchoRequest{Message: "x", FailCode: int32(code)})
			if got := status.Code(err); got != code {
				t.Errorf("code %v arrived as %v", code, got)
			}
		}
	})
}

func (m *grpcMesh) testDeadline(t *testing.T) {
	// Best of three, so one scheduling hiccup does not decide.
	best := time.Hour
	for range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		start := time.Now()
		_, err := m.client.Unary(ctx, &testpb.EchoRequest{Message: "slow", SleepMs: 200})
		best = min(best, time.Since(start))
		cancel()
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("a 50ms deadline on a 200ms method: %v, want DeadlineExceeded", err)
		}
	}
	if best > 100*time.Millisecond {
		t.Errorf("DeadlineExceeded after %v at best, want within 100ms", best)
	}
}

func (m *grpcMesh) testServerStream(t *testing.T) {
	s, err := m.client.ServerStream(testCtx(t, 30*time.Second), &testpb.EchoRequest{Message: "s", Count: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i := range int64(1000) {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv %d = %v", i, err)
		}
		if resp.Sequence != i {
			t.Fatalf("message %d has sequence %d: out of order", i, resp.Sequence)
		}
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after 1000 messages, Recv = %v, want io.EOF", err)
	}
	if got := s.Trailer().Get("x-trailer"); len(got) != 1 {
		t.Errorf("trailer = %v, want x-trailer", s.Trailer())
	}
}

func (m *grpcMesh) testClientStream(t *testing.T) {
	// Routed by grpc_routes: this client's :authority is an address.
	s, err := m.byRoute.ClientStream(testCtx(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	for i := range int64(n) {
		if err := s.Send(&testpb.EchoRequest{Message: "c", Sequence: i}); err != nil {
			t.Fatalf("Send %d = %v", i, err)
		}
	}
	resp, err := s.CloseAndRecv()
	if err != nil {
		t.Fatalf("CloseAndRecv = %v", err)
	}
	if resp.Received != n || resp.Sequence != n-1 {
		t.Errorf("the server got %d messages, last %d; want %d, last %d", resp.Received, resp.Sequence, n, n-1)
	}
}

// testClientRetries: a client's own retry policy works through the mesh as
// against the server itself. gRPC retries only a call that has had no
// header, so a status the application sent alone must reach the client
// alone (Trailers-Only), the mesh's metadata in its trailer.
func (m *grpcMesh) testClientRetries(t *testing.T) {
	var header, trailer metadata.MD
	req := &testpb.EchoRequest{Message: unique("retry"), FailCode: int32(codes.Unavailable), Count: 2}
	resp, err := m.retrying.Unary(testCtx(t, 10*time.Second), req, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil || resp.Message != req.Message {
		t.Fatalf("Unary = %v, %v; want an answer on the third attempt (the first two fail UNAVAILABLE)", resp, err)
	}
	// Without the policy the same failure reaches the caller, status,
	// details, trailer and the mesh's metadata intact.
	trailer = nil
	_, err = m.client.Unary(testCtx(t, 10*time.Second),
		&testpb.EchoRequest{Message: unique("noretry"), FailCode: int32(codes.Unavailable), Count: 1}, grpc.Trailer(&trailer))
	if st := status.Convert(err); st.Code() != codes.Unavailable || len(st.Details()) != 1 {
		t.Fatalf("status = %v, details %v; want UNAVAILABLE with its detail", st.Code(), st.Details())
	}
	if trailer.Get("x-trailer") == nil || trailer.Get("x-busmesh-instance") == nil {
		t.Errorf("trailer = %v, want x-trailer and x-busmesh-instance", trailer)
	}
}

// testHeaderFirst: a server that sends its header before it reads, and a
// caller that waits for that header before it sends (as grpc-go's metadata
// example does). Neither side may wait for the other's first message: the
// header must cross the mesh with no message behind it.
func (m *grpcMesh) testHeaderFirst(t *testing.T) {
	ctx := metadata.AppendToOutgoingContext(testCtx(t, 10*time.Second), "x-test-header-first", "yes")
	t.Run("client-stream", func(t *testing.T) {
		s, err := m.client.ClientStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		h, err := s.Header()
		if err != nil || len(h.Get("x-echo-header-first")) != 1 {
			t.Fatalf("Header = %v, %v after %v; want x-echo-header-first", h, err, time.Since(start))
		}
		for i := range int64(3) {
			if err := s.Send(&testpb.EchoRequest{Message: "c", Sequence: i}); err != nil {
				t.Fatalf("Send %d = %v", i, err)
			}
		}
		if resp, err := s.CloseAndRecv(); err != nil || resp.Received != 3 {
			t.Fatalf("CloseAndRecv = %v, %v; want 3 received", resp, err)
		}
		if got := s.Trailer().Get("x-trailer"); len(got) != 1 {
			t.Errorf("trailer x-trailer = %q, want [done]", got)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		s, err := m.client.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h, err := s.Header(); err != nil || len(h.Get("x-echo-header-first")) != 1 {
			t.Fatalf("Header = %v, %v; want x-echo-header-first", h, err)
		}
		if err := s.Send(&testpb.EchoRequest{Message: "b", Sequence: 1}); err != nil {
			t.Fatal(err)
		}
		if resp, err := s.Recv(); err != nil || resp.Message != "b" {
			t.Fatalf("Recv = %v, %v", resp, err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("Recv after CloseSend = %v, want io.EOF", err)
		}
	})
}

func (m *grpcMesh) testBidi(t *testing.T) {
	s, err := m.client.Bidi(testCtx(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	const n = 10000
	sendErr := make(chan error, 1)
	go func() {
		for i := range int64(n) {
			if err := s.Send(&testpb.EchoRequest{Message: "b", Sequence: i, Payload: make([]byte, 64)}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- s.CloseSend()
	}()
	for i := range int64(n) {
		resp, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv %d = %v", i, err)
		}
		if resp.Sequence != i {
			t.Fatalf("message %d came back as %d: out of order or lost", i, resp.Sequence)
		}
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after %d messages, Recv = %v, want io.EOF", n, err)
	}
	if err := <-sendErr; err != nil {
		t.Fatalf("Send = %v", err)
	}
}

// testCancel cancels a bidi stream midway; both sidecars' goroutines must
// return to where they were.
func (m *grpcMesh) testCancel(t *testing.T) {
	// Warm up connections and pools, then take the baseline.
	if _, err := m.client.Unary(testCtx(t, 10*time.Second), &testpb.EchoRequest{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	baseCaller, baseCallee := m.caller.metric("go_goroutines"), m.callee.metric("go_goroutines")
	for range 5 {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := m.client.Bidi(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range int64(50) {
			if err := s.Send(&testpb.EchoRequest{Sequence: i}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		if _, err := s.Recv(); status.Code(err) != codes.Canceled {
			t.Fatalf("Recv after cancel = %v, want Canceled", err)
		}
	}
	eventually(t, 10*time.Second, "goroutines back at baseline", func() bool {
		return m.caller.metric("go_goroutines") <= baseCaller && m.callee.metric("go_goroutines") <= baseCallee
	})
}

// testSlowReader opens a server stream of large messages and does not read
// it: the sidecars must hold a window's worth, not the stream.
func (m *grpcMesh) testSlowReader(t *testing.T) {
	const heap = "go_memstats_heap_inuse_bytes"
	baseCaller, baseCallee := m.caller.metric(heap), m.callee.metric(heap)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// 400 messages of 256 KiB: 100 MiB if nothing held it back.
	const count = 400
	s, err := m.client.ServerStream(ctx, &testpb.EchoRequest{Count: count, Payload: make([]byte, 256<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(2 * time.Second) // the reader stalls; the server could send it all in this time
	const bound = 16 << 20      // the window is 1 MiB per direction; HTTP/2 windows and garbage not yet collected add some
	growCaller, growCallee := m.caller.metric(heap)-baseCaller, m.callee.metric(heap)-baseCallee
	t.Logf("heap growth with a stalled reader: ambassador %.1f MiB, adapter %.1f MiB", growCaller/(1<<20), growCallee/(1<<20))
	if growCaller > bound || growCallee > bound {
		t.Errorf("heap grew by %.0f MiB (ambassador) and %.0f MiB (adapter) with a stalled reader, want under %d MiB each",
			growCaller/(1<<20), growCallee/(1<<20), bound>>20)
	}
	// Reading resumes and the stream completes.
	n := 1
	for {
		_, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv after the stall = %v", err)
		}
		n++
	}
	if n != count {
		t.Errorf("got %d messages, want %d", n, count)
	}
	t.Logf("%d MiB streamed in %v after the stall", count/4, time.Since(start)-2*time.Second)
}

// testCodesCounted: both sidecars count a call by the gRPC code it ended
// with, calls that reach their deadline and calls the caller cancels
// included.
func (m *grpcMesh) testCodesCounted(t *testing.T) {
	count := func(code string) (float64, float64) {
		want := map[string]string{"service": m.service, "grpc_code": code, "protocol": "grpc"}
		return m.caller.sum("busmesh_ambassador_requests_total", want), m.callee.sum("busmesh_adapter_requests_total", want)
	}
	okA, okB := count("OK")
	dlA, dlB := count("DeadlineExceeded")
	cnA, cnB := count("Canceled")
	if _, err := m.client.Unary(testCtx(t, 10*time.Second), &testpb.EchoRequest{Message: "fine"}); err != nil {
		t.Fatal(err)
	}
	// A deadline long enough that the call reaches the application even
	// on a busy machine, short enough that the application is still at it.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err := m.client.Unary(ctx, &testpb.EchoRequest{Message: "slow", SleepMs: 2000})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a 500ms deadline on a 2s method: %v, want DeadlineExceeded", err)
	}
	sctx, scancel := context.WithCancel(t.Context())
	s, err := m.client.Bidi(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testpb.EchoRequest{Sequence: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	scancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a1, b1 := count("OK")
		a2, b2 := count("DeadlineExceeded")
		a3, b3 := count("Canceled")
		if a1 >= okA+1 && b1 >= okB+1 && a2 >= dlA+1 && b2 >= dlB+1 && a3 >= cnA+1 && b3 >= cnB+1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted more (ambassador, adapter): OK %v %v, DeadlineExceeded %v %v, Canceled %v %v; want each 1 or more",
				a1-okA, b1-okB, a2-dlA, b2-dlB, a3-cnA, b3-cnB)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
