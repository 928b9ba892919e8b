package testpb

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Server implements Echo for tests and benchmarks. Every call answers with
// the caller's x-test-* metadata in its header, and sets the trailer
// x-trailer: done. A call with x-test-header-first has its header sent at
// once, before the server reads or sends any message (gRPC allows a client
// to wait for it before it sends).
type Server struct {
	UnimplementedEchoServer
}

type header interface {
	SetHeader(metadata.MD) error
	SendHeader(metadata.MD) error
}

func echoMetadata(ctx context.Context, s header) {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		if strings.HasPrefix(k, "x-test-") {
			out["x-echo-"+strings.TrimPrefix(k, "x-test-")] = v
		}
	}
	if len(md.Get("x-test-header-first")) > 0 {
		_ = s.SendHeader(out)
		return
	}
	_ = s.SetHeader(out) // fails only once headers are sent: not yet
}

func pause(ctx context.Context, ms int32) error {
	if ms <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// failure is the error a request with fail_code asks for: the code, a
// message, and the request itself as a detail.
func failure(req *EchoRequest) error {
	st := status.New(codes.Code(req.FailCode), "failed as asked: "+req.Message)
	if d, err := st.WithDetails(&EchoResponse{Message: "detail of " + req.Message, Sequence: req.Sequence}); err == nil {
		st = d
	}
	return st.Err()
}

type headerSetter struct{ ctx context.Context }

func (h headerSetter) SetHeader(md metadata.MD) error  { return grpc.SetHeader(h.ctx, md) }
func (h headerSetter) SendHeader(md metadata.MD) error { return grpc.SendHeader(h.ctx, md) }

// unaryFailures counts the failed calls of each message that asked to fail
// a number of times (Unary with fail_code and count).
var unaryFailures sync.Map // message → *atomic.Int32

// failsNow reports whether a request with fail_code fails this time: always,
// or with count, its message's first count times.
func failsNow(req *EchoRequest) bool {
	if req.Count <= 0 {
		return true
	}
	n, _ := unaryFailures.LoadOrStore(req.Message, new(atomic.Int32))
	return n.(*atomic.Int32).Add(1) <= req.Count
}

// Unary implements EchoServer. With fail_code it fails; with count too,
// only the first count calls carrying the same message fail, and later
// ones answer (a retry succeeds).
func (Server) Unary(ctx context.Context, req *EchoRequest) (*EchoResponse, error) {
	echoMetadata(ctx, headerSetter{ctx})
	_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "done"))
	if err := pause(ctx, req.SleepMs); err != nil {
		return nil, err
	}
	if req.FailCode != 0 && failsNow(req) {
		return nil, failure(req)
	}
	return &EchoResponse{Message: req.Message, Sequence: req.Sequence, Payload: req.Payload}, nil
}

// ServerStream implements EchoServer.
func (Server) ServerStream(req *EchoRequest, s grpc.ServerStreamingServer[EchoResponse]) error {
	echoMetadata(s.Context(), s)
	s.SetTrailer(metadata.Pairs("x-trailer", "done"))
	for i := range int64(req.Count) {
		if err := pause(s.Context(), req.SleepMs); err != nil {
			return err
		}
		if err := s.Send(&EchoResponse{Message: req.Message, Sequence: i, Payload: req.Payload}); err != nil {
			return err
		}
	}
	if req.FailCode != 0 {
		return failure(req)
	}
	return nil
}

// ClientStream implements EchoServer.
func (Server) ClientStream(s grpc.ClientStreamingServer[EchoRequest, EchoResponse]) error {
	echoMetadata(s.Context(), s)
	s.SetTrailer(metadata.Pairs("x-trailer", "done"))
	var n int64
	var last *EchoRequest
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			out := &EchoResponse{Received: n}
			if last != nil {
				out.Message, out.Sequence = last.Message, last.Sequence
			}
			return s.SendAndClose(out)
		}
		if err != nil {
			return err
		}
		if req.Sequence != n {
			return status.Errorf(codes.DataLoss, "message %d arrived as number %d", req.Sequence, n)
		}
		n++
		last = req
	}
}

// Bidi implements EchoServer.
func (Server) Bidi(s grpc.BidiStreamingServer[EchoRequest, EchoResponse]) error {
	echoMetadata(s.Context(), s)
	s.SetTrailer(metadata.Pairs("x-trailer", "done"))
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := pause(s.Context(), req.SleepMs); err != nil {
			return err
		}
		if req.FailCode != 0 {
			return failure(req)
		}
		if err := s.Send(&EchoResponse{Message: req.Message, Sequence: req.Sequence, Payload: req.Payload}); err != nil {
			return err
		}
	}
}
