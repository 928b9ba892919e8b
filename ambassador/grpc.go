package ambassador

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/grpcwire"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// grpcMetaError, grpcMetaInstance and grpcMetaBroker are X-Busmesh-Error,
// X-Busmesh-Instance and X-Busmesh-Broker as gRPC metadata.
const (
	grpcMetaError    = "x-busmesh-error"
	grpcMetaInstance = "x-busmesh-instance"
	grpcMetaBroker   = "x-busmesh-broker"
)

// callerKeepalive is which keepalive pings the gRPC port accepts from its
// callers. grpc-go's default (one every 5 minutes, none without a call in
// flight) answers a client that pings every 10 s, the shortest that
// grpc-go and grpc-java clients allow, with GOAWAY too_many_pings and drops
// its connection; the application's own server would have been set up for
// its clients. A sidecar on localhost takes them all.
var callerKeepalive = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}

func (a *Ambassador) newGRPCServer() *grpc.Server {
	return grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(callerKeepalive),
		grpc.UnknownServiceHandler(a.serveGRPC),
		grpc.ForceServerCodecV2(grpcwire.Codec{}),
		grpc.MaxRecvMsgSize(grpcwire.MaxMessage(int64(a.cfg.MaxBodyBytes))),
		grpc.MaxSendMsgSize(grpcwire.MaxMessage(int64(a.cfg.MaxBodyBytes))),
	)
}

// startGRPC serves the gRPC port on ln.
func (a *Ambassador) startGRPC(ln net.Listener) {
	srv := a.newGRPCServer()
	a.grpcServer = srv
	a.logger.Info("listening", telemetry.KeyAddr, ln.Addr().String(), "protocol", "grpc")
	a.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			a.logger.Error("grpc server stopped", telemetry.KeyAddr, ln.Addr().String(), telemetry.KeyErr, err)
		}
	})
}

// grpcRoute names the service of a call: the longest grpc_routes prefix of
// the method, else the :authority.
func (a *Ambassador) grpcRoute(method string, md metadata.MD) (*Route, bool) {
	t := a.table.Load()
	if rt, ok := t.byMethod(method); ok {
		return rt, true
	}
	if auth := md.Get(":authority"); len(auth) > 0 {
		return t.byHost(auth[0])
	}
	return nil, false
}

// serveGRPC translates one gRPC call, of any kind, into a Call, runs it
// through the pipeline, and relays its answer.
func (a *Ambassador) serveGRPC(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	rt, fixed := portRoute(ss.Context())
	ok := fixed && rt != nil
	if !fixed {
		rt, ok = a.grpcRoute(method, md)
	}
	if !ok {
		c, _ := a.begin(context.Background(), nil, start, start, true)
		defer a.end(c)
		why := "call with :authority <service> or set ambassador.grpc_routes"
		if fixed {
			why = "this port's service is no longer configured"
		}
		return a.grpcError(ss, c, reason.Errorf(reason.NoRoute, "no service for %s: %s", method, why))
	}
	// The caller's deadline (grpc-timeout) covers the call. Without one,
	// the default timeout bounds only the wait for the answer's head (a
	// unary answer comes with it): a stream its caller opened without a
	// deadline (a watch, a subscription) then lasts until either end
	// closes it, however quiet, as it would without the mesh. Nothing
	// leaks: the caller's connection is local, and the adapter drops a
	// call whose ambassador stops answering its liveness pings.
	deadline, has := ss.Context().Deadline()
	c, ctx := a.begin(ss.Context(), rt, start, deadline, true)
	defer a.end(c)
	if !has {
		ctx = c.awaitHead(ctx, a.cfg.Timeout.D())
	}
	if n := metadataEntries(md); n > envelope.MaxHeaderFields {
		return a.grpcError(ss, c, reason.Errorf(reason.HeadersTooLarge,
			"%d metadata entries, over the %d the mesh carries", n/2, envelope.MaxHeaderFields/2))
	}

	// The first messages, and whether the caller is done sending after
	// them. The receiver's goroutine ends with the stream, as the handler
	// returns.
	recv := grpcwire.Receive(ctx, ss)
	first, end := recv.First(ctx)
	if end != nil && end != io.EOF {
		return end
	}
	req := &c.Req
	req.Protocol, req.Method = envelope.ProtocolGRPC, method
	req.Headers = grpcwire.AppendMetadata(req.Headers, md)
	if auth := md.Get(":authority"); len(auth) > 0 {
		req.Host = auth[0]
	}
	if tp := md.Get("traceparent"); len(tp) > 0 {
		req.TraceParent = tp[0]
	}
	if ts := md.Get("tracestate"); len(ts) > 0 {
		req.TraceState = ts[0]
	}
	c.Body = &grpcBody{first: first, more: end == nil, recv: recv, chunk: a.chunk}
	err := a.invoke(ctx, c)
	if !has {
		c.idle.set(0, false)
	}
	if err != nil {
		return a.grpcError(ss, c, meshError(err))
	}
	return a.respondGRPC(ctx, ss, c)
}

// grpcBody is a gRPC call's request stream as a call's Body: the messages
// read before the call was sent, then the rest as the caller sends them.
// Messages travel as a byte stream, so what does not fit the request
// envelope follows in frames, whatever the broker's message size.
type grpcBody struct {
	first []byte
	more  bool // the caller had not ended its stream after first
	recv  *grpcwire.Receiver
	chunk int
	rest  []byte // the part of first that did not fit the request
}

func (b *grpcBody) First(room int) ([]byte, bool, error) {
	if len(b.first) > room {
		b.rest = b.first[room:]
		return b.first[:room], true, nil
	}
	return b.first, b.more, nil
}

func (b *grpcBody) Rest(ctx context.Context, s *stream.Sender) error {
	if len(b.rest) > 0 {
		if err := s.SendChunked(ctx, b.rest, b.chunk); err != nil {
			return err
		}
		if !b.more {
			return s.Send(ctx, nil, true, nil)
		}
	}
	for {
		msg, err := b.recv.Next(ctx)
		if err == io.EOF {
			return s.Send(ctx, nil, true, nil)
		}
		if err != nil {
			return err
		}
		if err := s.SendChunked(ctx, grpcwire.AppendMessage(nil, msg), b.chunk); err != nil {
			return err
		}
	}
}

// respondGRPC relays the adapter's answer: header metadata, messages (the
// rest streamed from frames), then the status and trailer metadata.
func (a *Ambassador) respondGRPC(ctx context.Context, ss grpc.ServerStream, c *Call) error {
	resp := c.Answer()
	if resp.Error != "" {
		detail := resp.Detail
		if detail == "" { // an older adapter says it in the body only
			detail = strings.TrimSpace(strings.TrimPrefix(string(resp.Body), "busmesh: "+resp.Error+": "))
		}
		r := reason.Parse(resp.Error)
		c.out.ReasonText = resp.Error
		return a.grpcError(ss, c, &reason.Error{Reason: r, Detail: detail})
	}
	header := grpcwire.Metadata(resp.Headers)
	if resp.Instance != "" {
		header.Set(grpcMetaInstance, resp.Instance)
	}
	if b := c.splitBroker(); b != "" {
		header.Set(grpcMetaBroker, b)
	}
	c.answeredBy(200)
	if !resp.More && len(resp.Body) == 0 && len(resp.Headers) == 0 {
		// A status alone from the application: if an error, answered as
		// it did, in the trailers alone, with the mesh's metadata there
		// too. A header would commit the call, and a client's own retry
		// policy (gRPC retries only calls that have had no header) would
		// no longer retry it.
		if st, trailer := grpcwire.Status(resp.Trailers); st.Code() != codes.OK {
			ss.SetTrailer(metadata.Join(header, trailer))
			c.out.Code = st.Code()
			return st.Err()
		}
	}
	send := ss.SetHeader // the header goes with the first message or the status
	if resp.More && len(resp.Body) == 0 {
		// The application sent its header and no message yet: it may be
		// waiting for the caller's messages, and the caller for the header.
		send = ss.SendHeader
	}
	if err := send(header); err != nil {
		c.out.Code = codes.Canceled
		return err
	}
	trailers := resp.Trailers
	if !resp.More {
		msgs, _ := grpcwire.SplitMessages(resp.Body)
		for _, m := range msgs {
			if err := ss.SendMsg(&grpcwire.Message{Data: m}); err != nil {
				return a.callerGone(c, err)
			}
		}
	} else {
		frames := a.answerFrames(c)
		r := io.MultiReader(bytes.NewReader(resp.Body), frames.reader(ctx))
		for {
			msg, err := grpcwire.ReadMessage(r, grpcwire.MaxMessage(int64(a.cfg.MaxBodyBytes)))
			if err == io.EOF {
				break
			}
			if err != nil {
				a.cancelRemote(c, err.Error())
				if errors.Is(ctx.Err(), context.DeadlineExceeded) || c.nearDeadline() {
					c.failedWith(reason.Timeout, "")
					return status.Error(codes.DeadlineExceeded, "busmesh: deadline exceeded while streaming")
				}
				if ctx.Err() != nil {
					c.failedWith(reason.Cancelled, "")
					return status.Error(codes.Canceled, "busmesh: caller cancelled")
				}
				return a.grpcError(ss, c, reason.Errorf(reason.StreamFailed, "%v", err))
			}
			if err := ss.SendMsg(&grpcwire.Message{Data: msg}); err != nil {
				return a.callerGone(c, err)
			}
		}
		trailers = frames.in.Trailers()
	}
	st, trailer := grpcwire.Status(trailers)
	ss.SetTrailer(trailer)
	c.out.Code = st.Code()
	return st.Err()
}

// callerGone ends a call whose caller can no longer be written to.
func (a *Ambassador) callerGone(c *Call, err error) error {
	a.cancelRemote(c, "caller went away")
	c.out.Code = codes.Canceled
	return err
}

// grpcError ends a call on the mesh's behalf, with the reason in the
// x-busmesh-error trailer.
func (a *Ambassador) grpcError(ss grpc.ServerStream, c *Call, e *reason.Error) error {
	text := c.out.ReasonText
	c.failedWith(e.Reason, text)
	if e.Reason == reason.Cancelled {
		return status.Error(codes.Canceled, "busmesh: caller cancelled")
	}
	if text == "" {
		text = e.Reason.String()
	}
	ss.SetTrailer(metadata.Pairs(grpcMetaError, text))
	if e.RetryAfter > 0 {
		ss.SetTrailer(metadata.Pairs("grpc-retry-pushback-ms", strconv.FormatInt(e.RetryAfter.Milliseconds(), 10)))
	}
	service := ""
	if c.Route != nil {
		service = c.Route.Service
	}
	a.logger.Debug("call answered by the mesh", telemetry.KeyService, service, telemetry.KeyStatus, e.Reason.GRPCCode().String(),
		telemetry.KeyReason, text, "detail", e.Detail)
	return status.Error(e.Reason.GRPCCode(), "busmesh: "+text+": "+e.Detail)
}

// metadataEntries counts the name and value entries metadata takes in an
// envelope's header list.
func metadataEntries(md metadata.MD) int {
	n := 0
	for _, vs := range md {
		n += 2 * len(vs)
	}
	return n
}
