package ambassador

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/grpcwire"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// grpcMetaError and grpcMetaInstance are X-Busmesh-Error and
// X-Busmesh-Instance as gRPC metadata.
const (
	grpcMetaError    = "x-busmesh-error"
	grpcMetaInstance = "x-busmesh-instance"
)

func (a *Ambassador) newGRPCServer() *grpc.Server {
	return grpc.NewServer(
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
func (a *Ambassador) grpcRoute(method string, md metadata.MD) (route, bool) {
	m := strings.TrimPrefix(method, "/")
	best, found := "", route{}
	for prefix, rt := range a.grpcRoutes {
		if strings.HasPrefix(m, prefix) && len(prefix) > len(best) {
			best, found = prefix, rt
		}
	}
	if best != "" {
		return found, true
	}
	if auth := md.Get(":authority"); len(auth) > 0 {
		return a.routes.byHost(auth[0])
	}
	return route{}, false
}

// serveGRPC carries one gRPC call, of any kind, over the bus.
func (a *Ambassador) serveGRPC(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ss.Context())
	rt, ok := a.grpcRoute(method, md)
	if !ok {
		return a.grpcError(ss, "", codes.Unimplemented, ReasonNoRoute,
			fmt.Sprintf("no service for %s: call with :authority <service> or set ambassador.grpc_routes", method))
	}
	if !a.available(rt) {
		return a.grpcError(ss, rt.service, codes.Unavailable, ReasonNoHealthy,
			fmt.Sprintf("no healthy instance of service %q is known", rt.service))
	}
	// The caller's deadline (grpc-timeout), or the default timeout.
	deadline, has := ss.Context().Deadline()
	if !has {
		deadline = start.Add(a.cfg.Timeout.D())
	}
	ctx, cancel := context.WithDeadline(ss.Context(), deadline)
	defer cancel()

	// The first message, and whether the caller is done sending after it.
	// The receiver's goroutine ends with the stream, as the handler returns.
	recv := grpcwire.Receive(ctx, ss)
	var body []byte
	more := false
	first, err := recv.Next(ctx)
	switch {
	case err == io.EOF:
	case err != nil:
		return err
	default:
		body = grpcwire.AppendMessage(nil, first)
		next, err, ok := recv.NextWithin(grpcwire.Settle)
		switch {
		case !ok:
			more = true
		case err == io.EOF:
		case err != nil:
			return err
		default:
			body = grpcwire.AppendMessage(body, next)
			more = true
		}
	}

	c := a.inbox.open()
	defer a.inbox.release(c)
	req := envelope.Request{
		ID:            c.id,
		Source:        a.sidecar,
		SourceService: a.cfg.Service,
		Service:       rt.service,
		Protocol:      envelope.ProtocolGRPC,
		Method:        method,
		Headers:       grpcwire.AppendMetadata(nil, md),
		Body:          body,
		More:          more,
		ReplyTo:       a.inbox.subject,
		Deadline:      deadline.UnixNano(),
		Window:        stream.DefaultWindow,
	}
	if auth := md.Get(":authority"); len(auth) > 0 {
		req.Host = auth[0]
	}
	if more {
		c.mu.Lock()
		c.accepted = make(chan struct{})
		c.mu.Unlock()
	}
	if req.EncodedSize() > a.maxMsg {
		return a.grpcError(ss, rt.service, codes.ResourceExhausted, ReasonRequestTooLarge,
			fmt.Sprintf("the first messages do not fit the broker's %d-byte messages", a.maxMsg))
	}
	st, err := a.publish(ctx, rt, c, &req, nil)
	if errors.Is(err, errNoHealthy) {
		return a.grpcError(ss, rt.service, codes.Unavailable, ReasonNoHealthy,
			fmt.Sprintf("no healthy instance of service %q is known", rt.service))
	}
	if err != nil {
		return a.grpcError(ss, rt.service, codes.Unavailable, ReasonBrokerUnavailable, err.Error())
	}
	pump := make(chan struct{})
	if more {
		go func() {
			defer close(pump)
			// A broken request stream shows in the answer, or the deadline.
			_ = a.sendMessages(ctx, c, recv)
		}()
	} else {
		close(pump)
	}

	answered, callErr := a.await(ctx, rt, c, &req, st)
	var result error
	switch {
	case answered:
		result = a.respondGRPC(ctx, ss, rt, c, start)
	case errors.Is(callErr, errNoResponders):
		result = a.grpcError(ss, rt.service, codes.Unavailable, ReasonNoResponders,
			fmt.Sprintf("no instance of service %q is connected to the broker", rt.service))
	case callErr != nil:
		result = a.grpcError(ss, rt.service, codes.Unavailable, ReasonStreamFailed, callErr.Error())
	case ss.Context().Err() != nil && !errors.Is(ss.Context().Err(), context.DeadlineExceeded):
		a.cancelRemote(c, rt, "caller cancelled")
		result = status.Error(codes.Canceled, "busmesh: caller cancelled")
	default:
		a.cancelRemote(c, rt, "deadline exceeded")
		result = a.grpcError(ss, rt.service, codes.DeadlineExceeded, ReasonTimeout,
			fmt.Sprintf("no answer from service %q before the deadline", rt.service))
	}
	cancel()
	<-pump
	return result
}

// sendMessages streams the caller's further messages once the adapter
// accepts the call, as the body of an HTTP/2 stream would go.
func (a *Ambassador) sendMessages(ctx context.Context, c *call, recv *grpcwire.Receiver) error {
	s, err := a.sender(ctx, c)
	if err != nil {
		return err
	}
	for {
		msg, err := recv.Next(ctx)
		if err == io.EOF {
			return s.Send(ctx, nil, true, nil)
		}
		if err != nil {
			return err
		}
		data := grpcwire.AppendMessage(nil, msg)
		for len(data) > a.chunk {
			if err := s.Send(ctx, data[:a.chunk], false, nil); err != nil {
				return err
			}
			data = data[a.chunk:]
		}
		if err := s.Send(ctx, data, false, nil); err != nil {
			return err
		}
	}
}

// respondGRPC relays the adapter's answer: header metadata, messages (the
// rest streamed from frames), then the status and trailer metadata.
func (a *Ambassador) respondGRPC(ctx context.Context, ss grpc.ServerStream, rt route, c *call, start time.Time) error {
	resp := &c.resp
	if resp.Error != "" {
		return a.grpcError(ss, rt.service, codeForReason(resp.Error), resp.Error,
			strings.TrimSpace(strings.TrimPrefix(string(resp.Body), "busmesh: "+resp.Error+": ")))
	}
	header := grpcwire.Metadata(resp.Headers)
	if resp.Instance != "" {
		header.Set(grpcMetaInstance, resp.Instance)
	}
	if err := ss.SetHeader(header); err != nil {
		return err
	}
	a.metrics.AmbassadorDuration.WithLabelValues(rt.service).Observe(time.Since(start).Seconds())
	trailers := resp.Trailers
	if !resp.More {
		msgs, _ := grpcwire.SplitMessages(resp.Body)
		for _, m := range msgs {
			if err := ss.SendMsg(&grpcwire.Message{Data: m}); err != nil {
				a.cancelRemote(c, rt, "caller went away")
				return err
			}
		}
	} else {
		c.mu.Lock()
		in, peer := c.inbound, c.peer
		c.mu.Unlock()
		r := io.MultiReader(bytes.NewReader(resp.Body), stream.NewReader(ctx, in, func(n int64) {
			_ = stream.Grant(ctx, a.broker, peer, c.id, a.sidecar, n)
		}))
		for {
			msg, err := grpcwire.ReadMessage(r, grpcwire.MaxMessage(int64(a.cfg.MaxBodyBytes)))
			if err == io.EOF {
				break
			}
			if err != nil {
				a.cancelRemote(c, rt, err.Error())
				if ctx.Err() != nil {
					return status.Error(codes.DeadlineExceeded, "busmesh: deadline exceeded while streaming")
				}
				return a.grpcError(ss, rt.service, codes.Unavailable, ReasonStreamFailed, err.Error())
			}
			if err := ss.SendMsg(&grpcwire.Message{Data: msg}); err != nil {
				a.cancelRemote(c, rt, "caller went away")
				return err
			}
		}
		trailers = in.Trailers()
	}
	st, trailer := grpcwire.Status(trailers)
	ss.SetTrailer(trailer)
	a.metrics.AmbassadorRequests.WithLabelValues(rt.service, "grpc_"+st.Code().String()).Inc()
	return st.Err()
}

// codeForReason maps the adapter's X-Busmesh-Error reasons to gRPC codes.
func codeForReason(reason string) codes.Code {
	switch reason {
	case ReasonTimeout:
		return codes.DeadlineExceeded
	case ReasonRequestTooLarge, "response-too-large":
		return codes.ResourceExhausted
	case "protocol-mismatch", ReasonNoRoute:
		return codes.Unimplemented
	}
	return codes.Unavailable
}

// grpcError ends a call on the mesh's behalf, with the reason in the
// x-busmesh-error trailer.
func (a *Ambassador) grpcError(ss grpc.ServerStream, service string, code codes.Code, reason, detail string) error {
	ss.SetTrailer(metadata.Pairs(grpcMetaError, reason))
	a.metrics.AmbassadorErrors.WithLabelValues(service, reason).Inc()
	a.metrics.AmbassadorRequests.WithLabelValues(service, "grpc_"+code.String()).Inc()
	a.logger.Debug("call answered by the mesh", telemetry.KeyService, service, telemetry.KeyStatus, code.String(),
		telemetry.KeyReason, reason, "detail", detail)
	return status.Error(code, "busmesh: "+reason+": "+detail)
}
