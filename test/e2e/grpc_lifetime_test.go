package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/busmesh/busmesh/test/testpb"
)

// streamWatcher is an Echo server whose ServerStream sends one message at
// once, then holds the stream open until the caller's side ends, noting
// when each stream started and when it saw the cancellation.
type streamWatcher struct {
	testpb.Server
	mu      sync.Mutex
	started int
	ended   []time.Time
}

func (w *streamWatcher) ServerStream(req *testpb.EchoRequest, s grpc.ServerStreamingServer[testpb.EchoResponse]) error {
	w.mu.Lock()
	w.started++
	w.mu.Unlock()
	if err := s.Send(&testpb.EchoResponse{Message: "open"}); err != nil {
		return err
	}
	<-s.Context().Done()
	w.mu.Lock()
	w.ended = append(w.ended, time.Now())
	w.mu.Unlock()
	return s.Context().Err()
}

func (w *streamWatcher) counts() (started int, ended []time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.started, append([]time.Time(nil), w.ended...)
}

// startWatchedMesh is a gRPC caller and callee around a streamWatcher.
func startWatchedMesh(t *testing.T, b brokerCase) (*streamWatcher, *sidecar, *sidecar, string, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &streamWatcher{}
	srv := grpc.NewServer()
	testpb.RegisterEchoServer(srv, w)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	service := unique("watch")
	callee := startSidecar(t, "grpc-callee", grpcCalleeConfig, map[string]string{
		"id": unique("wcallee"), "broker": b.url, "service": service, "target": lis.Addr().String(),
	})
	grpcAddr := freePort(t)
	caller := startSidecar(t, "grpc-caller", grpcCallerConfig, map[string]string{
		"id": unique("wcaller"), "broker": b.url, "service": service, "grpc": grpcAddr,
	})
	return w, caller, callee, service, grpcAddr
}

// openStreams opens n server streams over conns connections and waits
// until the application has all of them.
func openStreams(t *testing.T, w *streamWatcher, addr, service string, n, conns int) []*grpc.ClientConn {
	t.Helper()
	var cs []*grpc.ClientConn
	for range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(service))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		cs = append(cs, cc)
	}
	ctx := testCtx(t, 3*time.Minute)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range 20 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				s, err := testpb.NewEchoClient(cs[i%conns]).ServerStream(ctx, &testpb.EchoRequest{Count: 1})
				if err == nil {
					_, err = s.Recv()
				}
				if err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the application to hold every stream", func() bool {
		started, _ := w.counts()
		return started >= n
	})
	return cs
}

// TestGRPCCallLifetime: a call lives as long as its caller wants it. Server
// streams whose caller's connections close end at the application within
// a second; streams whose ambassador is killed (no word to anyone) are
// reaped within the liveness bound; none holds an adapter worker, so more
// streams than adapter.concurrency can be open at once.
func TestGRPCCallLifetime(t *testing.T) {
	for _, b := range brokers(t) {
		// One broker at a time: the bound is about the mesh's speed, not
		// about three meshes sharing two cores.
		t.Run(b.name, func(t *testing.T) {
			requireBroker(t, b)
			t.Run("ConnectionsClosed", func(t *testing.T) {
				w, _, callee, service, addr := startWatchedMesh(t, b)
				const n = 1000
				conns := openStreams(t, w, addr, service, n, 10)
				closed := time.Now()
				for _, cc := range conns {
					cc.Close()
				}
				eventually(t, 10*time.Second, "every stream's cancellation at the application", func() bool {
					_, ended := w.counts()
					return len(ended) >= n
				})
				_, ended := w.counts()
				late := 0
				var worst time.Duration
				for _, e := range ended {
					worst = max(worst, e.Sub(closed))
					if e.Sub(closed) > time.Second {
						late++
					}
				}
				t.Logf("%d streams: the application saw the last cancellation %v after the connections closed", n, worst)
				if late > 0 {
					t.Errorf("%d of %d cancellations reached the application more than 1s after the connections closed", late, n)
				}
				eventually(t, 2*time.Second, "the adapter's in-flight calls back to 0", func() bool {
					return callee.sum("busmesh_adapter_inflight_requests", map[string]string{"service": service}) == 0
				})
			})
			t.Run("AmbassadorKilled", func(t *testing.T) {
				w, caller, callee, service, addr := startWatchedMesh(t, b)
				const n = 50
				openStreams(t, w, addr, service, n, 2)
				killed := time.Now()
				caller.stop(syscall.SIGKILL)
				// Reaped within (maxProbes+1) × probeInterval = 6s of the last
				// word from the caller, plus a tick.
				eventually(t, 10*time.Second, "every stream of the killed ambassador reaped", func() bool {
					_, ended := w.counts()
					return len(ended) >= n
				})
				_, ended := w.counts()
				var worst time.Duration
				for _, e := range ended {
					worst = max(worst, e.Sub(killed))
				}
				t.Logf("%d streams of a killed ambassador reaped within %v", n, worst)
				reaped := callee.metric(`busmesh_adapter_calls_reaped_total{service="` + service + `"}`)
				if reaped < n {
					t.Errorf("busmesh_adapter_calls_reaped_total = %v, want %d", reaped, n)
				}
			})
		})
	}
}

// TestGRPCLargeMessages: messages up to gRPC's 4 MiB limit pass on every
// broker, whatever its own message size, both ways, unary and streaming.
func TestGRPCLargeMessages(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			// Sidecars without the race detector: this is about sizes, and
			// 300 MB through it would take minutes.
			m := startGRPCMeshWith(t, b, plainBinary)
			big := make([]byte, 4_000_000-64) // the message, with its other fields, is 4,000,000 bytes
			rand.Read(big)
			ctx := testCtx(t, 5*time.Minute)
			resp, err := m.client.Unary(ctx, &testpb.EchoRequest{Payload: big})
			if err != nil {
				t.Fatalf("4 MB request and answer: %v", err)
			}
			if !bytes.Equal(resp.Payload, big) {
				t.Fatalf("4 MB answer differs: %d bytes back", len(resp.Payload))
			}
			chunk := make([]byte, 3<<20)
			rand.Read(chunk)
			s, err := m.client.ServerStream(ctx, &testpb.EchoRequest{Count: 100, Payload: chunk})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 100 {
				r, err := s.Recv()
				if err != nil {
					t.Fatalf("message %d of 100: %v", i, err)
				}
				if !bytes.Equal(r.Payload, chunk) || r.Sequence != int64(i) {
					t.Fatalf("message %d: %d bytes, sequence %d", i, len(r.Payload), r.Sequence)
				}
			}
			if _, err := s.Recv(); err == nil {
				t.Fatal("a 101st message")
			}
		})
	}
}
