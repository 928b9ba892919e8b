package adapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// callKey names a call: ids are unique per calling sidecar only.
type callKey struct {
	source string
	id     uint64
}

// callTable is the calls being served, for the frames that follow them.
type callTable struct {
	mu sync.Mutex
	m  map[callKey]*serverCall
}

func (t *callTable) add(k callKey, c *serverCall) {
	t.mu.Lock()
	t.m[k] = c
	t.mu.Unlock()
}

func (t *callTable) remove(k callKey) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

func (t *callTable) get(k callKey) *serverCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k]
}

// cancelAll cancels every call being served.
func (t *callTable) cancelAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.m {
		c.cancel()
	}
}

// serverCall is a call being served: the request, the context that ends at
// the caller's deadline or cancel, the streams in both directions, and how
// it ended. An app serves it through its methods, which answer the caller.
type serverCall struct {
	a       *Adapter
	req     *envelope.Request
	start   time.Time
	cancel  context.CancelFunc
	inbound *stream.Inbound // the rest of the request body, when streamed

	mu     sync.Mutex
	window *stream.Window // credit for response frames, once streaming

	// How the call ended, for the metrics: set by the answering methods.
	status   int
	code     codes.Code
	why      reason.Reason
	answered bool
	headIn   time.Duration // the application's time to its answer's head
}

// serve makes one call to the application and answers it. It owns what
// every call needs: the context that ends at the caller's deadline or
// cancel, the call's registration for the frames that follow it, and the
// count of how it ended.
func (a *Adapter) serve(req *envelope.Request) {
	ctx, cancel := callContext(req)
	defer cancel()
	a.inflight.Inc()
	defer a.inflight.Dec()
	sc := &serverCall{a: a, req: req, start: time.Now(), cancel: cancel}
	defer a.record(sc)
	if req.Protocol == envelope.ProtocolGRPC != a.app.grpc() {
		detail := "service " + a.cfg.Service + " is a gRPC application; call it through the ambassador's gRPC port"
		if !a.app.grpc() {
			detail = "service " + a.cfg.Service + " is an HTTP application, not a gRPC server"
		}
		sc.fail(ctx, reason.ProtocolMismatch, detail)
		return
	}
	if req.More {
		sc.inbound = stream.NewInbound(stream.DefaultWindow)
	}
	key := callKey{req.Source, req.ID}
	a.calls.add(key, sc)
	defer a.calls.remove(key)
	a.app.serve(ctx, sc)
}

// callContext is the context of a call being served: it ends at the
// caller's deadline, or when the call is cancelled.
func callContext(req *envelope.Request) (context.Context, context.CancelFunc) {
	if dl, ok := req.DeadlineTime(); ok {
		return context.WithDeadline(context.Background(), dl)
	}
	return context.WithCancel(context.Background())
}

// handleFrame takes a frame for a call being served: more request body,
// window updates, or a cancel (on the inbox or the service's cancel subject).
func (a *Adapter) handleFrame(_ context.Context, data []byte) {
	env, err := envelope.Open(data)
	if err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	if env.Kind != envelope.KindFrame {
		a.reject("unexpected-kind", len(data), fmt.Errorf("a %s on the inbox", env.Kind))
		return
	}
	var f envelope.Frame
	if err := f.Unmarshal(env.Msg); err != nil {
		a.reject("malformed", len(data), err)
		return
	}
	c := a.calls.get(callKey{f.Source, f.ID})
	if c == nil {
		return // finished already, or served by another instance (cancels fan out)
	}
	c.frame(&f)
}

// frame applies a frame from the caller.
func (c *serverCall) frame(f *envelope.Frame) {
	switch {
	case f.Cancel:
		if c.inbound != nil {
			c.inbound.Fail(errors.New("cancelled by the caller: " + f.Error))
		}
		c.cancel()
	case f.Seq > 0 && c.inbound != nil:
		c.inbound.Push(f)
	}
	if f.WindowUpdate > 0 {
		c.mu.Lock()
		w := c.window
		c.mu.Unlock()
		if w != nil {
			w.Grant(int64(f.WindowUpdate))
		}
	}
}

// accept tells the caller of a streaming call where to send the rest of
// it, and how much.
func (c *serverCall) accept(ctx context.Context) error {
	f := envelope.Frame{ID: c.req.ID, ReplyTo: c.a.inbox, WindowUpdate: stream.DefaultWindow, Instance: c.a.cfg.Instance}
	if err := c.a.pub.Publish(ctx, c.req.ReplyTo, &f); err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	return nil
}

// body reads the streamed rest of the request body, granting the caller
// credit as the application reads.
func (c *serverCall) body(ctx context.Context) io.Reader {
	return stream.NewReader(ctx, c.inbound, func(n int64) {
		_ = stream.Grant(ctx, c.a.pub, c.req.ReplyTo, c.req.ID, "", n)
	})
}

// head prepares the head of the application's answer: its id and
// instance, and, when the request streams, the inbox and window its
// accept frame named (the answer may overtake that frame). When more is
// set the answer streams, and the window for its frames is opened.
func (c *serverCall) head(out *envelope.Response, more bool) {
	out.ID, out.Instance, out.More = c.req.ID, c.a.cfg.Instance, more
	if c.req.More || more {
		out.ReplyTo = c.a.inbox
	}
	if c.req.More {
		out.Window = stream.DefaultWindow
	}
	if more {
		c.mu.Lock()
		c.window = stream.NewWindow(int64(c.req.Window))
		c.mu.Unlock()
	}
}

// answer sends the head of the application's answer to the caller. It
// reports false when the caller cannot be answered.
func (c *serverCall) answer(ctx context.Context, out *envelope.Response) bool {
	if err := c.a.pub.Publish(ctx, c.req.ReplyTo, out); err != nil {
		c.a.logger.Debug("response not sent", telemetry.KeySubject, c.req.ReplyTo, telemetry.KeyErr, err)
		return false
	}
	c.answered, c.status, c.headIn = true, int(out.Status), time.Since(c.start)
	return true
}

// ended records the gRPC status a call ended with.
func (c *serverCall) ended(code codes.Code) { c.code = code }

// sender returns the Sender of the answer's frames, under the caller's
// window.
func (c *serverCall) sender() *stream.Sender {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &stream.Sender{Pub: c.a.pub, Subject: c.req.ReplyTo, ID: c.req.ID, Window: c.window}
}

// abort ends a streamed answer that failed after its head was sent: the
// caller is told, so its client sees a broken body, never a short one
// that looks complete.
func (c *serverCall) abort(ctx context.Context, r reason.Reason, err error) {
	c.a.logger.Debug("response stream failed", telemetry.KeyReason, r.String(), telemetry.KeyErr, err)
	c.why = r
	_ = stream.Cancel(ctx, c.a.pub, c.req.ReplyTo, c.req.ID, "", r.String())
}

// fail answers the call on the mesh's behalf.
func (c *serverCall) fail(ctx context.Context, r reason.Reason, detail string) {
	out := envelope.Response{
		ID:       c.req.ID,
		Status:   int32(r.HTTPStatus()),
		Instance: c.a.cfg.Instance,
		Error:    r.String(),
		Detail:   detail,
		Headers:  []string{"Content-Type", "text/plain; charset=utf-8"},
		Body:     []byte("busmesh: " + r.String() + ": " + detail + "\n"),
	}
	if err := c.a.pub.Publish(context.WithoutCancel(ctx), c.req.ReplyTo, &out); err != nil {
		c.a.logger.Debug("error response not sent", telemetry.KeyErr, err)
	}
	c.a.logger.Debug("call answered by the mesh", telemetry.KeyStatus, out.Status, telemetry.KeyReason, r.String(), "detail", detail)
	c.why, c.answered, c.status, c.code = r, true, int(out.Status), r.GRPCCode()
	c.headIn = time.Since(c.start)
}

// record counts a call that ended, whatever its outcome: the one place the
// adapter's request metrics are written.
func (a *Adapter) record(sc *serverCall) {
	if !sc.answered { // the caller went away, or its deadline passed first
		sc.status, sc.code = reason.StatusClientClosed, codes.Canceled
		if dl, ok := sc.req.DeadlineTime(); ok && !time.Now().Before(dl) {
			sc.status, sc.code = http.StatusGatewayTimeout, codes.DeadlineExceeded
		}
	}
	code := telemetry.Code(sc.status)
	if sc.req.Protocol == envelope.ProtocolGRPC {
		code = telemetry.GRPCCode(sc.code)
	}
	a.metrics.AdapterRequests.WithLabelValues(a.cfg.Service, code).Inc()
	if sc.answered {
		a.metrics.AdapterDuration.WithLabelValues(a.cfg.Service).Observe(sc.headIn.Seconds())
		a.latency.Observe(sc.headIn)
	}
}
