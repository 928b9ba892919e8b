package adapter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	encproto "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/grpcwire"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// everyKind describes a call the adapter knows nothing of: it may stream
// both ways.
var everyKind = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// grpcApp is a gRPC application, called with any method as bytes.
type grpcApp struct {
	conn   *grpc.ClientConn
	re     *reconnector
	maxMsg int
	health *config.Health
}

// newGRPCApp returns the client of a gRPC application, over TLS when
// tlsCfg is set (grpcs://); it connects on first use.
func newGRPCApp(host string, tlsCfg *tls.Config, maxMsg int, health *config.Health) (*grpcApp, error) {
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		creds = credentials.NewTLS(tlsCfg)
	}
	conn, err := grpc.NewClient(host,
		grpc.WithTransportCredentials(creds),
		appBackoff,
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(grpcwire.Codec{}),
			grpc.MaxCallRecvMsgSize(maxMsg),
			grpc.MaxCallSendMsgSize(maxMsg),
		),
	)
	if err != nil {
		return nil, err
	}
	return &grpcApp{conn: conn, re: &reconnector{conn: conn}, maxMsg: maxMsg, health: health}, nil
}

func (g *grpcApp) grpc() bool { return true }

func (g *grpcApp) close() error { return g.conn.Close() }

// protoCodec marshals the health check's messages: the connection's
// default codec passes calls' messages as bytes only.
var protoCodec = grpc.ForceCodecV2(encoding.GetCodecV2(encproto.Name))

// check asks the standard health service.
func (g *grpcApp) check(ctx context.Context) error {
	client, in := healthpb.NewHealthClient(g.conn), &healthpb.HealthCheckRequest{Service: g.health.GRPCService}
	resp, err := client.Check(ctx, in, protoCodec)
	if status.Code(err) == codes.Unavailable && g.re.ready(ctx) {
		resp, err = client.Check(ctx, in, protoCodec)
	}
	if err != nil {
		return err
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health status %v", s)
	}
	return nil
}

// serve makes one gRPC call, of any kind, to the application. When the
// answer streams on after its head, the rest is returned as tail.
func (g *grpcApp) serve(ctx context.Context, sc *serverCall) (tail func()) {
	req := sc.req
	md := grpcwire.Metadata(req.Headers)
	if req.TraceParent != "" {
		md.Set("traceparent", req.TraceParent)
		if req.TraceState != "" {
			md.Set("tracestate", req.TraceState)
		}
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
	cs, err := g.conn.NewStream(ctx, everyKind, req.Method)
	if status.Code(err) == codes.Unavailable && g.re.ready(ctx) {
		cs, err = g.conn.NewStream(ctx, everyKind, req.Method)
	}
	if err != nil {
		cancel()
		g.answerStatus(ctx, sc, status.Convert(err))
		return nil
	}
	// The caller's messages go to the application on their own goroutine,
	// while the answer comes back here.
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		if err := g.sendToApp(ctx, sc, cs); err != nil {
			sc.a.logger.Debug("request stream to the application failed", telemetry.KeyErr, err)
			cancel()
		}
	}()
	recv := grpcwire.Receive(ctx, cs)
	// cleanup ends the call's goroutines: cancel first, which ends the
	// receiver, then wait for both.
	cleanup := func() { cancel(); recv.Wait(); <-sendDone }
	streaming := false
	defer func() {
		if !streaming {
			cleanup()
		}
	}()

	// The head goes once the application has sent its header, with the
	// messages that follow it at once: none, if it waits for the caller's.
	header, _ := cs.Header()
	body, end := recv.First(ctx)
	out := envelope.Response{Status: http.StatusOK, Headers: grpcwire.AppendMetadata(nil, header)}
	// Messages travel as a byte stream: what does not fit the answer's
	// envelope follows in frames, whatever the broker's message size.
	sc.head(&out, true)
	room := sc.a.pub.MaxMessage() - out.EncodedSize() - stream.Slack
	if room < 0 {
		sc.fail(ctx, reason.ResponseTooLarge, "response metadata does not fit a broker message")
		return nil
	}
	rest := body[min(len(body), room):]
	out.Body = body[:len(body)-len(rest)]
	if end != nil && len(rest) == 0 {
		st := endStatus(end)
		sc.head(&out, false)
		out.Trailers = grpcwire.AppendStatus(nil, st, trailerOf(cs, end))
		if sc.answer(ctx, &out) {
			sc.ended(st.Code())
		}
		return nil
	}
	if !sc.answer(ctx, &out) {
		return nil
	}
	streaming = true
	return func() {
		defer cleanup()
		g.streamAnswer(ctx, sc, cs, recv, rest, end)
	}
}

// streamAnswer sends the rest of an answer in frames: rest, the part of
// the first messages that did not fit the head, then the application's
// messages until its stream ends (end, if it already has).
func (g *grpcApp) streamAnswer(ctx context.Context, sc *serverCall, cs grpc.ClientStream, recv *grpcwire.Receiver, rest []byte, end error) {
	s := sc.sender()
	if len(rest) > 0 {
		if err := s.SendChunked(ctx, rest, sc.a.chunk); err != nil {
			sc.sendFailed(ctx, err)
			return
		}
	}
	for err := end; ; err = nil {
		var msg []byte
		if err == nil {
			msg, err = recv.Next(ctx)
		}
		if err != nil {
			st := endStatus(err)
			sc.ended(st.Code())
			if serr := s.Send(ctx, nil, true, grpcwire.AppendStatus(nil, st, trailerOf(cs, err))); serr != nil {
				sc.sendFailed(ctx, serr)
			}
			return
		}
		if err := s.SendChunked(ctx, grpcwire.AppendMessage(nil, msg), sc.a.chunk); err != nil {
			sc.sendFailed(ctx, err)
			return
		}
	}
}

// sendToApp sends the caller's messages to the application, then closes
// its side of the stream.
func (g *grpcApp) sendToApp(ctx context.Context, sc *serverCall, cs grpc.ClientStream) error {
	req := sc.req
	if !req.More {
		msgs, rest := grpcwire.SplitMessages(req.Body)
		if len(rest) > 0 {
			return fmt.Errorf("a partial gRPC message of %d bytes in a complete request", len(rest))
		}
		for _, m := range msgs {
			if err := cs.SendMsg(&grpcwire.Message{Data: m}); err != nil {
				return nil // the application ended the call: its status says why
			}
		}
		return cs.CloseSend()
	}
	if err := sc.accept(ctx); err != nil {
		return err
	}
	r := io.MultiReader(bytes.NewReader(req.Body), sc.body(ctx))
	for {
		msg, err := grpcwire.ReadMessage(r, g.maxMsg)
		if err == io.EOF {
			return cs.CloseSend()
		}
		if err != nil {
			return err
		}
		if err := cs.SendMsg(&grpcwire.Message{Data: msg}); err != nil {
			return nil
		}
	}
}

// trailerOf returns the application's trailer metadata, once its stream
// ended with err. grpc-go's Trailer may be read only after the stream's
// RecvMsg returned an error; an error of the call's own context (it ended
// while the receiver waited) comes before that, and the stream's
// transport may still be closing it: no trailer then, the context says
// why the call ended.
func trailerOf(cs grpc.ClientStream, err error) metadata.MD {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return cs.Trailer()
}

// endStatus is the status a stream ended with: OK at a clean end.
func endStatus(err error) *status.Status {
	if err == nil || errors.Is(err, io.EOF) {
		return status.New(codes.OK, "")
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return status.FromContextError(err)
	}
	return status.Convert(err)
}

// answerStatus answers a call that ended before it started.
func (g *grpcApp) answerStatus(ctx context.Context, sc *serverCall, st *status.Status) {
	if st.Code() == codes.Unavailable {
		// The application cannot be reached: say so as the mesh.
		sc.fail(ctx, reason.AppUnreachable, st.Message())
		return
	}
	out := envelope.Response{Status: http.StatusOK, Trailers: grpcwire.AppendStatus(nil, st, nil)}
	sc.head(&out, false)
	if sc.answer(ctx, &out) {
		sc.ended(st.Code())
	}
}
