package adapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/broker"
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

// callTable is the calls being served, for the frames that follow them,
// and the cancels that came before their call did.
type callTable struct {
	mu sync.Mutex
	m  map[callKey]*serverCall
	// A cancel can overtake its request: the request waits on the broker or
	// for a worker while the caller gives up. Such cancels are kept, two
	// generations of at most maxEarlyCancels each, so the request is
	// dropped when it comes.
	early, older map[callKey]struct{}
	rotated      time.Time
}

// Early cancels are kept for earlyCancelTTL to 2×earlyCancelTTL: past
// that a request is either served (and its caller's pings reap it) or
// expired.
const (
	earlyCancelTTL  = 5 * time.Second
	maxEarlyCancels = 1 << 14
)

// add registers a call about to be served. It reports false when the
// call's caller has already cancelled it.
func (t *callTable) add(k callKey, c *serverCall) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, gone := t.early[k]; gone {
		return false
	}
	if _, gone := t.older[k]; gone {
		return false
	}
	t.m[k] = c
	return true
}

// cancelled records a cancel for a call not (yet) being served.
func (t *callTable) cancelled(k callKey, now time.Time) {
	if now.Sub(t.rotated) > earlyCancelTTL {
		t.older, t.early, t.rotated = t.early, make(map[callKey]struct{}), now
	}
	if len(t.early) < maxEarlyCancels {
		t.early[k] = struct{}{}
	}
}

func (t *callTable) remove(k callKey) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// frame returns the call a frame is for; a cancel for a call not being
// served is remembered, in case its request comes later.
func (t *callTable) frame(f *envelope.Frame) *serverCall {
	k := callKey{f.Source, f.ID}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.m[k]
	if c == nil && f.Cancel && f.Source != "" {
		t.cancelled(k, time.Now())
	}
	return c
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
	offered int64           // the window offered for it (stream.Budget.Offer)

	mu     sync.Mutex
	window *stream.Window // credit for response frames, once streaming

	// Liveness (see liveness.go): when the caller last said something, in
	// unix nanoseconds, and how many pings it has left unanswered since.
	lastHeard atomic.Int64
	probes    atomic.Int32

	// How the call ended, for the metrics: set by the answering methods.
	status   int
	code     codes.Code
	why      reason.Reason
	answered bool
	headIn   time.Duration // the application's time to its answer's head
	bytesOut int           // the answer's body in its head, for the access log

	// timedOut says the caller cancelled the call at its deadline (its
	// clock may run a little ahead of ours).
	timedOut atomic.Bool

	edge *telemetry.Edge // the call's edge, for the window of `busmesh top`
	span trace.Span      // the call's span, when tracing is on
}

// serve makes one call to the application and answers it. It owns what
// every call needs: the context that ends at the caller's deadline or
// cancel, the call's registration for the frames that follow it, and the
// count of how it ended.
//
// A call whose answer goes on streaming after its head (a server stream, a
// watch, a long download) leaves its worker once the head is sent: the
// worker limit, concurrency, bounds the calls the application is working
// on, not the streams it keeps open, so long-lived streams cannot take
// every worker. The streams are bounded by maxStreams instead.
func (a *Adapter) serve(req *envelope.Request) {
	ctx, cancel := a.callContext(req)
	a.inflight.Inc()
	sc := &serverCall{a: a, req: req, start: time.Now(), cancel: cancel}
	sc.heard()
	a.started(sc)
	ctx = a.traced(ctx, sc)
	key := callKey{req.Source, req.ID}
	added := false
	finish := func() {
		if added {
			a.calls.remove(key)
		}
		if sc.inbound != nil {
			sc.inbound.Release() // unread body's credit back to the budget
		}
		a.ended(sc) // metrics, span, access log
		a.inflight.Dec()
		cancel()
	}
	if req.Protocol == envelope.ProtocolGRPC != a.app.grpc() {
		detail := "service " + a.cfg.Service + " is a gRPC application; call it with a gRPC client (the ambassador's gRPC port, or its HTTP ports over HTTP/2)"
		if !a.app.grpc() {
			detail = "service " + a.cfg.Service + " is an HTTP application, not a gRPC server"
		}
		sc.fail(ctx, reason.ProtocolMismatch, detail)
		finish()
		return
	}
	if req.More {
		sc.offered = a.budget.Offer()
		sc.inbound = stream.NewBudgetedInbound(sc.offered, a.budget)
	}
	if added = a.calls.add(key, sc); !added {
		finish() // cancelled by its caller before it was served
		return
	}
	tail := a.app.serve(ctx, sc)
	if tail == nil {
		finish()
		return
	}
	if !a.streams.detach(func() { tail(); finish() }) {
		tail() // at maxStreams: the stream keeps its worker
		finish()
	}
}

// maxStreams bounds the streams served apart from the workers (see serve).
const maxStreams = 10000

// streamSet runs the streaming rest of calls on goroutines of their own,
// at most max at once.
type streamSet struct {
	max     int32
	n       atomic.Int32
	running sync.WaitGroup
}

// detach runs f on a goroutine of its own, unless max streams run
// already; it reports whether it did.
func (s *streamSet) detach(f func()) bool {
	if s.n.Add(1) > s.max {
		s.n.Add(-1)
		return false
	}
	s.running.Go(func() {
		defer s.n.Add(-1)
		f()
	})
	return true
}

// wait waits for the detached streams to end.
func (s *streamSet) wait() { s.running.Wait() }

// callContext is the context of a call being served: it ends at the
// caller's deadline, or when the call is cancelled. With security on,
// what is published with it is sealed for the caller's service alone
// (secure.ForPeer), which authenticated checked the request came from.
func (a *Adapter) callContext(req *envelope.Request) (context.Context, context.CancelFunc) {
	parent := a.forPeer(context.Background(), req)
	if dl, ok := req.DeadlineTime(); ok {
		return context.WithDeadline(parent, dl)
	}
	return context.WithCancel(parent)
}

// handleFrame takes a frame for a call being served: more request body,
// window updates, or a cancel (on the inbox or the service's cancel subject).
func (a *Adapter) handleFrame(_ context.Context, data []byte) {
	env, from, why, err := a.open(data)
	if err != nil {
		a.reject(why, len(data), err)
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
	c := a.calls.frame(&f)
	if c == nil {
		return // finished already, or served by another instance (cancels fan out)
	}
	if a.guard != nil && from.Peer.Service() != c.req.SourceService {
		// Calls are found by the caller's sidecar id and call id, which
		// any sender can name: only the caller's service may cancel its
		// call or add to its body.
		a.reject("wrong-sender", len(data), fmt.Errorf("a frame for a call of %s sent by %s", c.req.SourceService, from.Peer.Service()))
		return
	}
	c.frame(&f)
}

// frame applies a frame from the caller.
func (c *serverCall) frame(f *envelope.Frame) {
	c.heard()
	switch {
	case f.Cancel:
		if reason.Parse(f.Error) == reason.Timeout {
			c.timedOut.Store(true)
		}
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
	f := envelope.Frame{ID: c.req.ID, ReplyTo: c.a.inbox, WindowUpdate: uint32(c.offered), Instance: c.a.cfg.Instance}
	if err := c.a.pub.Publish(ctx, c.req.ReplyTo, &f); err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	return nil
}

// body reads the streamed rest of the request body, granting the caller
// credit as the application reads.
func (c *serverCall) body(ctx context.Context) io.Reader {
	return stream.NewReader(ctx, c.inbound, func(n int64) error {
		return stream.Grant(ctx, c.a.pub, c.req.ReplyTo, c.req.ID, "", n)
	})
}

// head prepares the head of the application's answer: its id and
// instance, and, when the request streams, the inbox and window its
// accept frame named (the answer may overtake that frame). When more is
// set the answer streams, and the window for its frames is opened.
func (c *serverCall) head(out *envelope.Response, more bool) {
	out.ID, out.Instance, out.More = c.req.ID, c.a.cfg.Instance, more
	out.ReplyTo, out.Window = "", 0
	if c.req.More || more {
		out.ReplyTo = c.a.inbox
	}
	if c.req.More {
		out.Window = uint32(c.offered)
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
		if ctx.Err() != nil {
			return false // the caller is gone, or its deadline passed
		}
		// The caller must not wait for its deadline: tell it in a small
		// answer of the mesh's, which may still go through.
		c.a.publishFailed("response", c.req.ReplyTo, err)
		r := reason.StreamFailed
		if errors.Is(err, broker.ErrTooLarge) {
			r = reason.ResponseTooLarge
		}
		c.fail(ctx, r, "the answer could not be sent: "+err.Error())
		return false
	}
	c.answered, c.status, c.headIn = true, int(out.Status), time.Since(c.start)
	c.a.results.keep(c.req, out)
	c.bytesOut = len(out.Body)
	return true
}

// ended records the gRPC status a call ended with.
func (c *serverCall) ended(code codes.Code) { c.code = code }

// window0 is the window the caller offered for the answer, which also
// bounds the body sent in its head.
func (c *serverCall) window0() int {
	if c.req.Window == 0 {
		return stream.DefaultWindow
	}
	return int(c.req.Window)
}

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
	if cerr := stream.Cancel(context.WithoutCancel(ctx), c.a.pub, c.req.ReplyTo, c.req.ID, "", r.String()); cerr != nil {
		c.a.publishFailed("frame", c.req.ReplyTo, cerr)
	}
}

// sendFailed ends a streamed answer whose frames could not be sent, unless
// the call ended first (its caller gone or its deadline passed).
func (c *serverCall) sendFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	c.a.publishFailed("frame", c.req.ReplyTo, err)
	c.abort(ctx, reason.StreamFailed, err)
}

// publishFailed counts and logs an envelope the adapter could not send.
func (a *Adapter) publishFailed(message, subject string, err error) {
	a.metrics.PublishErrors.WithLabelValues("adapter", message).Inc()
	if ok, suppressed := a.limiter.Allow(); ok {
		a.logger.Warn("publish failed: the caller is told", telemetry.KeySubject, subject, "message", message,
			telemetry.KeyErr, err, "suppressed", suppressed)
	}
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
	if r == reason.Overloaded {
		out.Headers = append(out.Headers, "Retry-After", "1")
	}
	if err := c.a.pub.Publish(context.WithoutCancel(ctx), c.req.ReplyTo, &out); err != nil {
		c.a.publishFailed("response", c.req.ReplyTo, err)
	}
	c.a.logger.Debug("call answered by the mesh", telemetry.KeyStatus, out.Status, telemetry.KeyReason, r.String(), "detail", detail)
	c.why, c.answered, c.status, c.code = r, true, int(out.Status), r.GRPCCode()
	c.headIn = time.Since(c.start)
}

// maxCallers bounds the caller label: the first maxCallers source services
// named in requests get a series of their own, the rest share Unknown.
const maxCallers = 1024

// started counts a call in flight on its edge.
func (a *Adapter) started(sc *serverCall) {
	sc.edge = a.metrics.Window.Edge(telemetry.EdgeKey{Side: telemetry.SideAdapter,
		Caller: a.callers.Admit(sc.req.SourceService), Service: a.cfg.Service}, nil)
	sc.edge.Start()
}

// ended finishes what watches a call: its metrics, its span and its access
// log line.
func (a *Adapter) ended(sc *serverCall) {
	a.record(sc)
	a.judge(sc)
	if sc.span != nil {
		a.endSpan(sc)
	}
	if a.access != nil {
		a.logAccess(sc)
	}
}

// requestLabels are the label values of a call's request counter besides
// the adapter's service and instance, which are its own.
type requestLabels struct{ caller, protocol, class, code, grpcCode string }

// durationLabels are those of its duration histogram.
type durationLabels struct{ caller, protocol string }

// record counts a call that ended, whatever its outcome: the one place the
// adapter's request metrics are written (and the window of its edge fed).
func (a *Adapter) record(sc *serverCall) {
	if !sc.answered { // the caller went away, or its deadline passed first
		sc.status, sc.code = reason.StatusClientClosed, codes.Canceled
		if dl, ok := sc.req.DeadlineTime(); sc.timedOut.Load() || ok && !time.Now().Before(dl) {
			sc.status, sc.code = http.StatusGatewayTimeout, codes.DeadlineExceeded
		}
		sc.headIn = time.Since(sc.start)
	}
	grpc := sc.req.Protocol == envelope.ProtocolGRPC
	protocol, code, grpcCode := telemetry.ProtocolHTTP, telemetry.Code(sc.status), ""
	if grpc {
		protocol, code, grpcCode = telemetry.ProtocolGRPC, "", telemetry.GRPCCode(sc.code)
	}
	class := telemetry.Class(sc.status, grpc, sc.code)
	caller, service, instance := sc.edge.Key().Caller, a.cfg.Service, a.cfg.Instance
	a.requests.Get(requestLabels{caller, protocol, class, code, grpcCode}, func() prometheus.Counter {
		return a.metrics.AdapterRequests.WithLabelValues(caller, service, instance, protocol, class, code, grpcCode)
	}).Inc()
	a.durations.Get(durationLabels{caller, protocol}, func() prometheus.Observer {
		return a.metrics.AdapterDuration.WithLabelValues(caller, service, instance, protocol)
	}).Observe(sc.headIn.Seconds())
	if sc.answered {
		a.latency.Observe(sc.headIn)
	}
	failed := !telemetry.Success(class)
	sc.edge.Done(failed, sc.headIn)
	if failed {
		why := sc.why.String()
		if why == "" {
			why = code + grpcCode
		}
		a.services.count(true, sc.headIn, why)
	} else {
		a.services.count(false, sc.headIn, "")
	}
}

// refuse answers a call the adapter cannot serve before its deadline:
// overloaded, at once, without a worker or the application.
func (a *Adapter) refuse(req *envelope.Request, detail string) {
	sc := &serverCall{a: a, req: req, start: time.Now(), cancel: func() {}}
	a.started(sc)
	ctx, cancel := a.callContext(req)
	defer cancel()
	sc.fail(ctx, reason.Overloaded, detail)
	a.ended(sc)
}
