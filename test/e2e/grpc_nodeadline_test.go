package e2e

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/test/testpb"
)

// grpcShortTimeoutConfig is a gRPC caller with a 1 s default timeout and
// a 700 ms idle timeout (which applies to HTTP calls only).
const grpcShortTimeoutConfig = `id: {{id}}
broker: {{broker}}
admin: {{admin}}
ambassador:
  service: grpc-caller
  grpc: {{grpc}}
  timeout: 1s
  idle_timeout: 700ms
`

// TestGRPCWithoutDeadline: a gRPC call whose caller set no deadline has
// the ambassador's default timeout bound only the wait for the answer's
// head; then the stream lasts, however quiet (longer than both the default
// timeout and the idle timeout here), as it would without the mesh (a
// watch, a subscription). A stream or unary call whose head does not come
// within the default timeout gets DEADLINE_EXCEEDED, and a caller's own
// deadline covers its whole call as before.
func TestGRPCWithoutDeadline(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			echo := startEchoServer(t)
			m := &grpcMesh{service: unique("grpc")}
			grpcAddr := freePort(t)
			m.callee = startSidecar(t, "grpc-callee", grpcCalleeConfig, map[string]string{
				"id": unique("gcallee"), "broker": b.url, "service": m.service, "target": echo,
			})
			m.caller = startSidecar(t, "grpc-caller", grpcShortTimeoutConfig, map[string]string{
				"id": unique("gcaller"), "broker": b.url, "grpc": grpcAddr,
			})
			m.connect(t, grpcAddr)
			// noDeadline is a context without a deadline, cancelled after d
			// as a guard: grpc-go sends no grpc-timeout for it.
			noDeadline := func(d time.Duration) context.Context {
				ctx, cancel := context.WithCancel(t.Context())
				t.Cleanup(cancel)
				time.AfterFunc(d, cancel)
				return ctx
			}
			eventually(t, 10*time.Second, "the service answers", func() bool {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				_, err := m.client.Unary(ctx, &testpb.EchoRequest{Message: "up"})
				return err == nil
			})
			// stream reads a server stream to its end: the messages and
			// the final status.
			stream := func(ctx context.Context, req *testpb.EchoRequest, header bool) (int, time.Duration, error) {
				t.Helper()
				if header {
					ctx = metadata.AppendToOutgoingContext(ctx, "x-test-header-first", "1")
				}
				start := time.Now()
				s, err := m.client.ServerStream(ctx, req)
				if err != nil {
					return 0, time.Since(start), err
				}
				n := 0
				for {
					_, err := s.Recv()
					if errors.Is(err, io.EOF) {
						return n, time.Since(start), nil
					}
					if err != nil {
						return n, time.Since(start), err
					}
					n++
				}
			}

			// 12 messages over 2.4 s, past the 1 s default timeout.
			if n, took, err := stream(noDeadline(20*time.Second), &testpb.EchoRequest{Message: "watch", Count: 12, SleepMs: 200}, false); n != 12 || err != nil {
				t.Errorf("a server stream without a deadline over 2.4 s: %d messages of 12 in %v, %v; want all, OK", n, took, err)
			}
			// The same with its header sent first.
			if n, took, err := stream(noDeadline(20*time.Second), &testpb.EchoRequest{Message: "watch", Count: 12, SleepMs: 200}, true); n != 12 || err != nil {
				t.Errorf("a server stream (header first) without a deadline over 2.4 s: %d messages of 12 in %v, %v; want all, OK", n, took, err)
			}
			// A quiet stream: its header, then 1.5 s without a message, twice.
			if n, took, err := stream(noDeadline(20*time.Second), &testpb.EchoRequest{Message: "quiet", Count: 2, SleepMs: 1500}, true); n != 2 || err != nil {
				t.Errorf("a quiet stream without a deadline: %d messages of 2 in %v, %v; want both, OK", n, took, err)
			}
			// A stream whose head does not come within the default timeout.
			n, took, err := stream(noDeadline(20*time.Second), &testpb.EchoRequest{Message: "late", Count: 1, SleepMs: 3000}, false)
			if n != 0 || status.Code(err) != codes.DeadlineExceeded || took > 2500*time.Millisecond {
				t.Errorf("a stream without a deadline whose head is 3 s late: %d messages in %v, %v; want DeadlineExceeded at the 1 s default timeout", n, took, err)
			}
			// A unary call slower than the default timeout.
			start := time.Now()
			_, err = m.client.Unary(noDeadline(20*time.Second), &testpb.EchoRequest{Message: "slow", SleepMs: 3000})
			if took := time.Since(start); status.Code(err) != codes.DeadlineExceeded || took > 2500*time.Millisecond {
				t.Errorf("a unary call without a deadline, 3 s slow: %v after %v; want DeadlineExceeded at the 1 s default timeout", err, took)
			}
			// The caller's own deadline covers its whole stream.
			ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
			defer cancel()
			if n, took, err := stream(ctx, &testpb.EchoRequest{Message: "bounded", Count: 12, SleepMs: 200}, false); n == 12 || status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("a server stream with a 1.5 s deadline over 2.4 s: %d messages in %v, %v; want DeadlineExceeded before the end", n, took, err)
			}
		})
	}
}
