package adapter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// The X-Busmesh-Error reasons the adapter gives.
const (
	ReasonAppUnreachable   = "app-unreachable"
	ReasonTimeout          = "timeout"
	ReasonResponseTooLarge = "response-too-large"
	ReasonBadRequest       = "bad-request"
)

// callContext is the context of a call being served: it ends at the
// caller's deadline, or when the call is cancelled.
func callContext(req *envelope.Request) (context.Context, context.CancelFunc) {
	if dl, ok := req.DeadlineTime(); ok {
		return context.WithDeadline(context.Background(), dl)
	}
	return context.WithCancel(context.Background())
}

// serve makes one call to the application, of the protocol it speaks, and
// sends the answer back. It owns what every call needs: the context that
// ends at the caller's deadline or cancel, and the call's registration for
// the frames that follow it.
func (a *Adapter) serve(req *envelope.Request) {
	start := time.Now()
	ctx, cancel := callContext(req)
	defer cancel()
	a.inflight.Inc()
	defer a.inflight.Dec()
	switch {
	case req.Protocol == envelope.ProtocolGRPC && a.grpc == nil:
		a.answerError(ctx, req, http.StatusBadGateway, ReasonProtocolMismatch,
			"service "+a.cfg.Service+" is an HTTP application, not a gRPC server", start)
		return
	case req.Protocol != envelope.ProtocolGRPC && a.grpc != nil:
		a.answerError(ctx, req, http.StatusBadGateway, ReasonProtocolMismatch,
			"service "+a.cfg.Service+" is a gRPC application; call it through the ambassador's gRPC port", start)
		return
	}
	key := callKey{req.Source, req.ID}
	sc := &serverCall{cancel: cancel}
	if req.More {
		sc.inbound = stream.NewInbound(stream.DefaultWindow)
	}
	a.register(key, sc)
	defer a.unregister(key)
	if a.grpc != nil {
		a.serveGRPC(ctx, req, sc, start)
	} else {
		a.serveHTTP(ctx, req, sc, start)
	}
}

// accept tells the caller of a streaming call where to send the rest of
// it, and how much.
func (a *Adapter) accept(ctx context.Context, req *envelope.Request) error {
	f := envelope.Frame{ID: req.ID, ReplyTo: a.inbox, WindowUpdate: stream.DefaultWindow, Instance: a.cfg.Instance}
	if err := stream.Publish(ctx, a.broker, req.ReplyTo, &f); err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	return nil
}

// serveHTTP makes one HTTP call to the application.
func (a *Adapter) serveHTTP(ctx context.Context, req *envelope.Request, sc *serverCall, start time.Time) {
	var body io.Reader = http.NoBody
	contentLength := int64(len(req.Body))
	if req.More {
		// Accept the call: the caller sends the rest of the body here.
		if err := a.accept(ctx, req); err != nil {
			a.logger.Debug("accept not sent", telemetry.KeyErr, err)
			return
		}
		body = io.MultiReader(bytes.NewReader(req.Body), a.bodyReader(ctx, req, sc))
		contentLength = -1
		for i := 0; i+1 < len(req.Headers); i += 2 {
			if http.CanonicalHeaderKey(req.Headers[i]) == "Content-Length" {
				if n, err := strconv.ParseInt(req.Headers[i+1], 10, 64); err == nil {
					contentLength = n
				}
			}
		}
	} else if len(req.Body) > 0 {
		body = bytes.NewReader(req.Body)
	}

	httpReq, err := http.NewRequestWithContext(ctx, req.Method, a.target+req.Path, body)
	if err != nil {
		a.answerError(ctx, req, http.StatusBadRequest, ReasonBadRequest, err.Error(), start)
		return
	}
	httpReq.ContentLength = contentLength
	httpReq.Header = make(http.Header, len(req.Headers)/2+1)
	envelope.SetHTTPHeader(httpReq.Header, req.Headers)
	if req.Host != "" {
		httpReq.Header.Set("X-Forwarded-Host", req.Host)
	}

	resp, err := a.client.Do(httpReq)
	if err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			a.answerError(context.Background(), req, http.StatusGatewayTimeout, ReasonTimeout,
				"the application did not answer before the deadline", start)
		case ctx.Err() != nil:
			// Cancelled by the caller: nobody is waiting for an answer.
			a.count(499, start)
		default:
			a.answerError(ctx, req, http.StatusBadGateway, ReasonAppUnreachable, err.Error(), start)
		}
		return
	}
	defer resp.Body.Close()
	a.forward(ctx, req, resp, sc, start)
}

// forward sends the application's response to the caller: in the response
// message if it fits, else streamed in frames under the caller's window.
func (a *Adapter) forward(ctx context.Context, req *envelope.Request, resp *http.Response, sc *serverCall, start time.Time) {
	limit := int64(a.cfg.MaxBodyBytes)
	if resp.ContentLength > limit {
		a.answerError(ctx, req, http.StatusBadGateway, ReasonResponseTooLarge,
			fmt.Sprintf("response body of %d bytes is over max_body_bytes (%d)", resp.ContentLength, limit), start)
		return
	}
	out := envelope.Response{
		ID:       req.ID,
		Status:   int32(resp.StatusCode),
		Instance: a.cfg.Instance,
	}
	out.Headers = envelope.AppendHTTPHeader(make([]string, 0, 2*len(resp.Header)), resp.Header)
	room := min(a.maxMsg-out.EncodedSize()-stream.Slack, stream.MaxInline)
	if room < 0 {
		a.answerError(ctx, req, http.StatusBadGateway, ReasonResponseTooLarge, "response headers do not fit a broker message", start)
		return
	}
	buf := stream.GetBuffer()
	defer stream.PutBuffer(buf)
	first, more, err := stream.ReadFirst(resp.Body, buf, room, resp.ContentLength)
	if err != nil {
		a.answerError(ctx, req, http.StatusBadGateway, ReasonAppUnreachable, "read response body: "+err.Error(), start)
		return
	}
	out.Body, out.More = first, more
	if req.More {
		out.ReplyTo, out.Window = a.inbox, stream.DefaultWindow // as the accept frame said
	}
	if !more {
		out.Trailers = envelope.AppendHTTPHeader(nil, resp.Trailer)
	} else {
		out.ReplyTo = a.inbox
		w := stream.NewWindow(int64(req.Window))
		a.mu.Lock()
		sc.window = w
		a.mu.Unlock()
	}
	if err := stream.Publish(ctx, a.broker, req.ReplyTo, &out); err != nil {
		a.logger.Debug("response not sent", telemetry.KeySubject, req.ReplyTo, telemetry.KeyErr, err)
		return
	}
	a.count(resp.StatusCode, start)
	if !more {
		return
	}
	s := stream.Sender{Broker: a.broker, Subject: req.ReplyTo, ID: req.ID, Window: sc.window}
	chunk := make([]byte, a.chunk)
	trailers := func() []string { return envelope.AppendHTTPHeader(nil, resp.Trailer) }
	if _, err := s.Copy(ctx, resp.Body, chunk, false, int64(len(first)), limit, trailers); err != nil && ctx.Err() == nil {
		reason := ReasonAppUnreachable
		if errors.Is(err, stream.ErrTooLarge) {
			reason = ReasonResponseTooLarge
		}
		a.logger.Debug("response stream failed", telemetry.KeyErr, err)
		_ = stream.Cancel(ctx, a.broker, req.ReplyTo, req.ID, "", reason)
	}
}

// answerError answers a call on the mesh's behalf.
func (a *Adapter) answerError(ctx context.Context, req *envelope.Request, status int, reason, detail string, start time.Time) {
	out := envelope.Response{
		ID:       req.ID,
		Status:   int32(status),
		Instance: a.cfg.Instance,
		Error:    reason,
		Headers:  []string{"Content-Type", "text/plain; charset=utf-8"},
		Body:     []byte("busmesh: " + reason + ": " + detail + "\n"),
	}
	if err := stream.Publish(ctx, a.broker, req.ReplyTo, &out); err != nil {
		a.logger.Debug("error response not sent", telemetry.KeyErr, err)
	}
	a.logger.Debug("call answered by the mesh", telemetry.KeyStatus, status, telemetry.KeyReason, reason, "detail", detail)
	a.count(status, start)
}

func (a *Adapter) count(status int, start time.Time) {
	took := time.Since(start)
	a.metrics.AdapterRequests.WithLabelValues(a.cfg.Service, telemetry.Code(status)).Inc()
	a.metrics.AdapterDuration.WithLabelValues(a.cfg.Service).Observe(took.Seconds())
	a.latency.Observe(took)
}
