package adapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/grpcwire"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// ReasonProtocolMismatch answers an HTTP call to a gRPC application, or
// the other way round.
const ReasonProtocolMismatch = "protocol-mismatch"

// everyKind describes a call the adapter knows nothing of: it may stream
// both ways.
var everyKind = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// dialGRPC returns the client connection to a gRPC application; it
// connects on first use.
func dialGRPC(host string, maxMsg int) (*grpc.ClientConn, error) {
	return grpc.NewClient(host,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(grpcwire.Codec{}),
			grpc.MaxCallRecvMsgSize(maxMsg),
			grpc.MaxCallSendMsgSize(maxMsg),
		),
	)
}

// serveGRPC makes one gRPC call, of any kind, to the application.
func (a *Adapter) serveGRPC(ctx context.Context, req *envelope.Request, sc *serverCall, start time.Time) {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, grpcwire.Metadata(req.Headers)))
	defer cancel()
	cs, err := a.grpc.NewStream(ctx, everyKind, req.Method)
	if err != nil {
		a.answerStatus(ctx, req, status.Convert(err), nil, start)
		return
	}
	// The caller's messages go to the application on their own goroutine,
	// while the answer comes back here.
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		if err := a.sendToApp(ctx, req, sc, cs); err != nil {
			a.logger.Debug("request stream to the application failed", telemetry.KeyErr, err)
			cancel()
		}
	}()
	defer func() { cancel(); <-sendDone }()

	recv := grpcwire.Receive(ctx, cs)
	defer recv.Wait()
	defer cancel() // first: ends the receiver before Wait

	var body []byte
	more := false
	first, err := recv.Next(ctx)
	if err == nil {
		body = grpcwire.AppendMessage(nil, first)
		next, nerr, ok := recv.NextWithin(grpcwire.Settle)
		switch {
		case !ok:
			more = true
		case nerr == nil:
			body = grpcwire.AppendMessage(body, next)
			more = true
		default:
			err = nerr
		}
	}
	header, _ := cs.Header()
	out := envelope.Response{
		ID:       req.ID,
		Status:   http.StatusOK,
		Instance: a.cfg.Instance,
		Headers:  grpcwire.AppendMetadata(nil, header),
		Body:     body,
		More:     more,
	}
	if req.More {
		// The caller may see this answer before the accept frame, sent on
		// another goroutine: it carries the same window, so either works.
		out.ReplyTo, out.Window = a.inbox, stream.DefaultWindow
	}
	if !more {
		out.Trailers = grpcwire.AppendStatus(nil, endStatus(err), cs.Trailer())
		a.publishAnswer(ctx, req, &out, start)
		return
	}
	out.ReplyTo = a.inbox
	w := stream.NewWindow(int64(req.Window))
	a.mu.Lock()
	sc.window = w
	a.mu.Unlock()
	if !a.publishAnswer(ctx, req, &out, start) {
		return
	}
	s := stream.Sender{Broker: a.broker, Subject: req.ReplyTo, ID: req.ID, Window: w}
	for {
		msg, err := recv.Next(ctx)
		if err != nil {
			trailers := grpcwire.AppendStatus(nil, endStatus(err), cs.Trailer())
			if serr := s.Send(ctx, nil, true, trailers); serr != nil {
				a.logger.Debug("end of stream not sent", telemetry.KeyErr, serr)
			}
			return
		}
		data := grpcwire.AppendMessage(nil, msg)
		for len(data) > 0 {
			n := min(len(data), a.chunk)
			if err := s.Send(ctx, data[:n], false, nil); err != nil {
				a.logger.Debug("response stream failed", telemetry.KeyErr, err)
				return
			}
			data = data[n:]
		}
	}
}

// sendToApp sends the caller's messages to the application, then closes
// its side of the stream.
func (a *Adapter) sendToApp(ctx context.Context, req *envelope.Request, sc *serverCall, cs grpc.ClientStream) error {
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
	if err := a.accept(ctx, req); err != nil {
		return err
	}
	r := io.MultiReader(bytes.NewReader(req.Body), a.bodyReader(ctx, req, sc))
	for {
		msg, err := grpcwire.ReadMessage(r, grpcwire.MaxMessage(int64(a.cfg.MaxBodyBytes)))
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

// endStatus is the status a stream ended with: OK at a clean end.
func endStatus(err error) *status.Status {
	if err == nil || errors.Is(err, io.EOF) {
		return status.New(codes.OK, "")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.New(codes.DeadlineExceeded, err.Error())
	}
	return status.Convert(err)
}

// answerStatus answers a call that ended before its first message.
func (a *Adapter) answerStatus(ctx context.Context, req *envelope.Request, st *status.Status, trailer metadata.MD, start time.Time) {
	if st.Code() == codes.Unavailable {
		// The application cannot be reached: say so as the mesh.
		a.answerError(ctx, req, http.StatusBadGateway, ReasonAppUnreachable, st.Message(), start)
		return
	}
	out := envelope.Response{ID: req.ID, Status: http.StatusOK, Instance: a.cfg.Instance,
		Trailers: grpcwire.AppendStatus(nil, st, trailer)}
	a.publishAnswer(ctx, req, &out, start)
}

// publishAnswer sends a response to the caller and counts it.
func (a *Adapter) publishAnswer(ctx context.Context, req *envelope.Request, out *envelope.Response, start time.Time) bool {
	if err := stream.Publish(ctx, a.broker, req.ReplyTo, out); err != nil {
		a.logger.Debug("response not sent", telemetry.KeySubject, req.ReplyTo, telemetry.KeyErr, err)
		return false
	}
	a.count(int(out.Status), start)
	return true
}
