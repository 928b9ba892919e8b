package ambassador

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// Headers busmesh reads on calls and sets on answers.
const (
	// HeaderTimeout sets a call's deadline, as a Go duration ("250ms").
	HeaderTimeout = "X-Busmesh-Timeout"
	// HeaderError says why the mesh, not the application, answered.
	HeaderError = "X-Busmesh-Error"
	// HeaderInstance names the instance that served the call.
	HeaderInstance = "X-Busmesh-Instance"
	// HeaderBroker names the broker a call of a service split over
	// brokers went over: primary or an ambassador.brokers name.
	HeaderBroker = "X-Busmesh-Broker"
)

// Handler returns the HTTP handler of a port: a per-service port when
// service is set, else the shared port, which routes by the Host header.
// Routes are looked up in the table in force at each call.
func (a *Ambassador) Handler(service string) http.Handler {
	if service != "" {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t := a.table.Load()
			rt := t.route(service)
			if rt == nil { // the port outlived its route in a reload
				rt, _ = t.byHost(service)
			}
			if isGRPC(r) {
				a.serveGRPCOverHTTP(w, r, rt)
				return
			}
			a.serveHTTP(w, r, rt)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGRPC(r) {
			a.httpGRPC().ServeHTTP(w, r) // routed as on the gRPC port
			return
		}
		rt, ok := a.table.Load().byHost(r.Host)
		if !ok {
			a.refuseHTTP(w, nil, reason.Errorf(reason.NoRoute,
				"the Host header %q names no service; call this port with Host: <service> or <service>.mesh", r.Host))
			return
		}
		a.serveHTTP(w, r, rt)
	})
}

// serveHTTP translates one HTTP call into a Call, runs it through the
// pipeline, and writes its answer.
func (a *Ambassador) serveHTTP(w http.ResponseWriter, r *http.Request, rt *Route) {
	start := time.Now()
	if n := headerEntries(r.Header); n > envelope.MaxHeaderFields {
		a.refuseHTTP(w, rt, reason.Errorf(reason.HeadersTooLarge,
			"%d header lines, over the %d the mesh carries", n/2, envelope.MaxHeaderFields/2))
		return
	}
	if len(r.RequestURI) > envelope.MaxPathBytes {
		a.refuseHTTP(w, rt, reason.Errorf(reason.URITooLong,
			"a request target of %d bytes, over the %d the mesh carries", len(r.RequestURI), envelope.MaxPathBytes))
		return
	}
	if up, ok := upgradeOf(r); ok {
		if !carried(up, r) {
			a.refuseHTTP(w, rt, reason.Errorf(reason.UpgradeUnsupported,
				"the mesh carries HTTP/1.1 upgrades such as websocket, not %s %q", r.Method, up))
			return
		}
		a.serveUpgrade(w, r, rt, start, up)
		return
	}
	timeout := rt.Policy.Timeout.D()
	explicit := false
	if v := r.Header.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			a.refuseHTTP(w, rt, reason.Errorf(reason.BadTimeout, "%s: %q is not a positive duration (example: 250ms)", HeaderTimeout, v))
			return
		}
		timeout, explicit = d, true
	}
	limit := capOf(rt.Policy.MaxBodyBytes)
	if r.ContentLength > limit {
		a.refuseHTTP(w, rt, reason.Errorf(reason.RequestTooLarge,
			"request body of %d bytes is over max_body_bytes (%d)", r.ContentLength, limit))
		return
	}
	idle := rt.Policy.IdleTimeout.D()
	events := timeout > 0 && !explicit && acceptsEventStream(r.Header)
	var deadline time.Time
	if timeout > 0 && !events {
		deadline = start.Add(timeout)
	}
	c, ctx := a.begin(r.Context(), rt, start, deadline, false)
	defer a.end(c)
	// readBy is when ctx ends if no byte moves before: the bound on
	// reading a body that fits the call's first message (httpBody.First).
	readBy := deadline
	switch {
	case events:
		// A Server-Sent Events stream lasts as long as its page: as for an
		// upgrade, the timeout bounds the wait for the answer's head, then
		// only the idle timeout ends a stream on which nothing moves.
		ctx = c.awaitHead(ctx, timeout)
		readBy = c.headBy
	case idle > 0 && (timeout == 0 || idle < timeout):
		ctx, c.idle = watchIdle(ctx, idle)
		readBy = start.Add(idle)
	}
	a.request(c, r)
	c.http = httpBody{r: r, w: w, limit: limit, chunk: a.chunk, idle: c.idle, by: readBy}
	c.Body = &c.http
	defer c.releaseHTTP()
	err := a.invoke(ctx, c)
	if events {
		c.idle.set(idle, false)
	}
	if err != nil {
		a.writeHTTPError(w, c, meshError(err))
		return
	}
	a.respondHTTP(ctx, w, c)
}

// acceptsEventStream reports whether a request asks for Server-Sent Events
// (Accept: text/event-stream, as EventSource and SSE clients send it, with
// no q=0 refusing it).
func acceptsEventStream(h http.Header) bool {
	for _, v := range h["Accept"] {
		for mt := range strings.SplitSeq(v, ",") {
			mt, params, _ := strings.Cut(mt, ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return !refused(params)
			}
		}
	}
	return false
}

// refused reports whether a media range's parameters give it q=0.
func refused(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q == 0
		}
	}
	return false
}

// request fills the request envelope of an HTTP call.
func (a *Ambassador) request(c *Call, r *http.Request) {
	path := r.RequestURI
	if !strings.HasPrefix(path, "/") { // absolute form, as sent to a proxy
		path = r.URL.RequestURI()
	}
	req := &c.Req
	req.Protocol, req.Method, req.Path, req.Host = envelope.ProtocolHTTP, r.Method, path, r.Host
	req.Headers = envelope.AppendHTTPHeader(req.Headers, r.Header)
	req.Headers = envelope.AppendTrailerNames(req.Headers, r.Trailer)
	req.TraceParent, req.TraceState = r.Header.Get("Traceparent"), r.Header.Get("Tracestate")
}

// capOf returns a configured cap as a limit: 0 is none.
func capOf(n config.ByteSize) int64 {
	if n <= 0 {
		return math.MaxInt64
	}
	return int64(n)
}

// httpBody is an HTTP request body as a call's Body. It sends what the
// client has sent as it comes (a streaming upload is not held back to fill
// a frame), and the request's trailers with the end of the body.
type httpBody struct {
	r       *http.Request
	w       http.ResponseWriter
	limit   int64
	chunk   int
	idle    *idleWatch
	by      time.Time // when the call ends unless bytes move (zero: never)
	buf     *[]byte
	prompt  stream.Prompt
	sent    int64
	reading atomic.Bool // a read of the rest is in progress
}

func (b *httpBody) First(room int) ([]byte, bool, error) {
	b.buf = bus.GetBuffer()
	// A body of a declared length that fits is read whole, with no time
	// limit of its own: a caller that sends part of it and stalls would
	// hold the call past its end. Only that read is bounded (a longer or
	// chunked body is read as it comes, and Rest bounds the rest).
	bounded := false
	if n := b.r.ContentLength; n > 0 && n <= int64(room) && !b.by.IsZero() {
		bounded = setReadDeadline(b.w, b.by)
	}
	data, more, err := b.prompt.First(b.r.Body, b.buf, room, b.r.ContentLength, stream.Settle)
	timedOut := errors.Is(err, os.ErrDeadlineExceeded)
	if bounded && !timedOut {
		// Lifted at once: after the body's end net/http reads the
		// connection in the background, and a deadline would fail that
		// read (its HTTP/1 server clears it then too; this does not rely
		// on it). One that fired stays: the rest of the body will not
		// come, and net/http's discard of it must not wait for it either
		// (the connection is closed after the answer).
		setReadDeadline(b.w, time.Time{})
	}
	if timedOut {
		return nil, false, reason.Errorf(reason.Timeout, "the request body of %d bytes did not come in time", b.r.ContentLength)
	}
	if err != nil {
		return nil, false, reason.Errorf(reason.BadRequest, "read request body: %v", err)
	}
	if int64(len(data)) > b.limit {
		return nil, false, reason.Errorf(reason.RequestTooLarge, "request body is over max_body_bytes (%d)", b.limit)
	}
	if !more && len(b.r.Trailer) > 0 {
		more = true // the trailers go with the end frame
	}
	if more {
		// Full duplex: an adapter may answer before it has read the body.
		_ = http.NewResponseController(b.w).EnableFullDuplex()
	}
	b.sent = int64(len(data))
	b.idle.touch()
	return data, more, nil
}

// setReadDeadline sets the read deadline of w's connection (HTTP/2: of
// its stream), as ResponseController does but with no allocation on a
// call's hot path; false when w has none.
func setReadDeadline(w http.ResponseWriter, t time.Time) bool {
	for {
		switch x := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			return x.SetReadDeadline(t) == nil
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return false
		}
	}
}

func (b *httpBody) Rest(ctx context.Context, s *stream.Sender) error {
	// A client that stalls mid-body must not outlive the call: a read in
	// progress ends when ctx does. Only a read in progress: a read deadline
	// on a connection whose body has ended would fail the server's own
	// read of the next request. The deadline is set before Rest returns.
	rc := http.NewResponseController(b.w)
	unblocked := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(unblocked)
		if b.reading.Load() {
			_ = rc.SetReadDeadline(time.Now())
		}
	})
	defer func() {
		if !stop() {
			<-unblocked
		}
	}()
	buf := make([]byte, b.chunk)
	trailers := func() []string { return envelope.AppendHTTPHeader(nil, b.r.Trailer) }
	_, err := s.Copy(ctx, restReader{b, ctx}, buf, false, b.sent, b.limit, trailers)
	return err
}

// restReader reads the rest of a request body, saying when a read is in
// progress and recording activity.
type restReader struct {
	b   *httpBody
	ctx context.Context
}

func (r restReader) Read(p []byte) (int, error) {
	r.b.reading.Store(true)
	if err := r.ctx.Err(); err != nil {
		// ctx ended between two reads, after Rest's AfterFunc found no
		// read in progress: no deadline will end this one.
		r.b.reading.Store(false)
		return 0, err
	}
	n, err := r.b.prompt.Read(p)
	r.b.reading.Store(false)
	if n > 0 {
		r.b.idle.touch()
	}
	return n, err
}

// releaseHTTP ends what still reads the request body for c (the rest of
// the body, a read First left in progress) and returns its buffer.
func (c *Call) releaseHTTP() {
	c.cancel()
	if c.pump != nil {
		<-c.pump
	}
	b := &c.http
	if b.prompt.Pending() && !b.prompt.Done() {
		// Rare: the answer came before the client sent more of its body.
		_ = http.NewResponseController(b.w).SetReadDeadline(time.Now())
		b.prompt.Wait()
	}
	if b.buf != nil {
		bus.PutBuffer(b.buf)
	}
}

// touchReader records activity on an idle watch as it reads.
type touchReader struct {
	r    io.Reader
	idle *idleWatch
}

func (t touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.idle.touch()
	}
	return n, err
}

// respondHTTP writes the adapter's answer: status, headers, body (streamed
// as it comes if it comes in frames, each frame flushed to the caller) and
// trailers. A body over the route's response cap is refused with 502
// before the status, or aborted after it.
func (a *Ambassador) respondHTTP(ctx context.Context, w http.ResponseWriter, c *Call) {
	resp := c.Answer()
	limit := capOf(c.Route.Policy.MaxResponseBytes)
	if resp.Error == "" && int64(len(resp.Body)) > limit {
		a.cancelRemote(c, reason.ResponseTooLarge.String())
		a.writeHTTPError(w, c, reason.Errorf(reason.ResponseTooLarge, "response body is over max_response_bytes (%d)", limit))
		return
	}
	h := w.Header()
	envelope.SetHTTPHeader(h, resp.Headers)
	if _, typed := h["Content-Type"]; !typed {
		// The application named no type: neither does a proxy. net/http
		// would sniff one from the body and add it.
		h["Content-Type"] = nil
	}
	if limit < math.MaxInt64 && resp.Error == "" && c.Req.Method != http.MethodHead && contentLength(h) > limit {
		size := h.Get("Content-Length")
		clear(h)
		a.cancelRemote(c, reason.ResponseTooLarge.String())
		a.writeHTTPError(w, c, reason.Errorf(reason.ResponseTooLarge, "response body of %s bytes is over max_response_bytes (%d)",
			size, limit))
		return
	}
	declared := envelope.TrailerNames(resp.Headers)
	if len(declared) == 0 && !resp.More && len(resp.Trailers) > 0 {
		// Announce them, so that HTTP/1.1 sends the body chunked and can
		// carry them.
		for i := 0; i+1 < len(resp.Trailers); i += 2 {
			declared = append(declared, http.CanonicalHeaderKey(resp.Trailers[i]))
		}
	}
	for _, name := range declared {
		h.Add("Trailer", name)
	}
	if resp.Instance != "" {
		h.Set(HeaderInstance, resp.Instance)
	}
	if b := c.splitBroker(); b != "" {
		h.Set(HeaderBroker, b)
	}
	status := int(resp.Status)
	if status < 100 || status > 999 {
		status = http.StatusBadGateway
	}
	c.answeredBy(status)
	if resp.Error != "" {
		h[HeaderError] = []string{resp.Error}
		c.failedWith(reason.Parse(resp.Error), resp.Error)
		c.out.Status = status
	}
	whole := !resp.More && len(declared) == 0 && len(resp.Trailers) == 0 && sizedNow(c.http.r, status, h, len(resp.Body))
	var bound *writeBound // nil for a small whole answer: net/http buffers it
	if resp.More || len(resp.Body) > bufferedWrite {
		bound = boundWrites(ctx, w)
		defer bound.lift()
	}
	var rc *http.ResponseController
	if resp.More {
		rc = http.NewResponseController(w) // the head goes before a slow body's first byte
	}
	w.WriteHeader(status)
	if len(resp.Body) > 0 || rc != nil {
		if err := bound.write(w, resp.Body, rc); err != nil {
			a.writeFailed(ctx, c, err)
			return
		}
	}
	if whole {
		// The caller has its answer now, not after the call's metrics and
		// access log, which net/http's own flush, when the handler
		// returns, would wait for. The call settles first: its caller may
		// send the next call the moment it has this answer.
		bound.lift() // before settle ends ctx
		a.settle(c)
		_ = http.NewResponseController(w).Flush()
		return
	}
	if !resp.More {
		setTrailers(h, resp.Trailers, declared)
		return
	}
	frames := a.answerFrames(c)
	sent := int64(len(resp.Body))
	for {
		data, err := frames.next(ctx)
		if err == io.EOF {
			setTrailers(h, frames.in.Trailers(), declared)
			return
		}
		if err == nil && sent+int64(len(data)) > limit {
			err = reason.Errorf(reason.ResponseTooLarge, "response body is over max_response_bytes (%d)", limit)
			a.cancelRemote(c, reason.ResponseTooLarge.String())
		}
		if err != nil {
			a.abortHTTP(ctx, c, err)
		}
		c.idle.touch()
		sent += int64(len(data))
		if err := bound.write(w, data, rc); err != nil {
			a.writeFailed(ctx, c, err)
			return
		}
	}
}

// bufferedWrite is the most a handler's Write takes into net/http's own
// buffer (HTTP/1.x: the response's 2 KiB buffer; HTTP/2 buffers more):
// a write that size does not wait for the caller to read.
const bufferedWrite = 2 << 10

// writeBound makes an answer's writes fail once the call's context ends
// (its deadline, its idle timeout). net/http's server has no write timeout
// (right for streams), so without it a caller that stops reading holds the
// handler in Write for as long as it keeps its connection open, and with
// it the call, its slot, its goroutine and its stream window.
//
// Only a write in progress is cut short: a deadline that passes between
// writes fails the next one, and one that passes after the last byte
// fails nothing. On HTTP/2 a write deadline in the past resets the stream
// at once, so it is set only while a write waits.
type writeBound struct {
	rc    *http.ResponseController
	state atomic.Int32
	stop  func() bool
	done  chan struct{} // closed when expire has run
}

// The states of a writeBound.
const (
	boundIdle    int32 = iota // between writes
	boundWriting              // a write in progress
	boundExpired              // ctx ended: writes fail
	boundLifted               // the answer is complete, or given up
)

// boundWrites bounds the writes of an answer on w by ctx. The handler must
// lift the bound before it returns (net/http then reuses w).
func boundWrites(ctx context.Context, w http.ResponseWriter) *writeBound {
	b := &writeBound{rc: http.NewResponseController(w), done: make(chan struct{})}
	b.stop = context.AfterFunc(ctx, b.expire)
	return b
}

// expire runs when ctx ends: it cuts a write in progress short.
func (b *writeBound) expire() {
	defer close(b.done)
	for {
		switch s := b.state.Load(); s {
		case boundIdle:
			if b.state.CompareAndSwap(s, boundExpired) {
				return
			}
		case boundWriting:
			if b.state.CompareAndSwap(s, boundExpired) {
				_ = b.rc.SetWriteDeadline(time.Now())
				return
			}
		default:
			return
		}
	}
}

// write writes p and, with rc, flushes it. On a nil bound it writes
// unbounded. It fails once ctx has ended, also when the deadline cut in
// after the data was taken: it may not all reach the caller.
func (b *writeBound) write(w http.ResponseWriter, p []byte, rc *http.ResponseController) error {
	if b != nil && !b.state.CompareAndSwap(boundIdle, boundWriting) {
		return os.ErrDeadlineExceeded // ended between writes
	}
	var err error
	if len(p) > 0 {
		_, err = w.Write(p)
	}
	if err == nil && rc != nil {
		_ = rc.Flush() // a failure shows in the next write, or ends the answer
	}
	if b != nil && !b.state.CompareAndSwap(boundWriting, boundIdle) && err == nil {
		err = os.ErrDeadlineExceeded
	}
	return err
}

// lift ends the bound: the answer is complete, or the handler gives it
// up. Once it returns, nothing touches the ResponseWriter on the bound's
// behalf. Only the handler calls it; again is a no-op.
func (b *writeBound) lift() {
	if b == nil || b.state.Load() == boundLifted {
		return
	}
	if !b.stop() {
		<-b.done
	}
	b.state.Store(boundLifted)
}

// writeFailed ends a call whose answer could not be written to its caller:
// aborted and counted under its reason when the call had ended (its
// deadline or idle timeout passed while the caller did not read); else the
// caller went away. On HTTP/1.1 a write that failed ends the request's
// context too: the call's, ended first, tells.
func (a *Ambassador) writeFailed(ctx context.Context, c *Call, err error) {
	if ctx.Err() != nil && streamReason(ctx, nil) != reason.Cancelled {
		a.abortHTTP(ctx, c, err) // does not return
	}
	a.cancelRemote(c, "caller went away")
}

// abortHTTP ends a response whose status is sent but whose body broke off
// (over a cap, the stream failed, the deadline or idle timeout passed): the
// connection is aborted so that the caller sees a broken body (HTTP/1.1:
// no last chunk, the connection closed; HTTP/2: the stream reset), never a
// short one that looks complete. It is counted under its reason and
// logged.
func (a *Ambassador) abortHTTP(ctx context.Context, c *Call, err error) {
	r := streamReason(ctx, err)
	c.out.Reason, c.out.ReasonText = r, ""
	a.cancelRemote(c, r.String())
	if r != reason.Cancelled {
		a.logger.Warn("response aborted after its status", telemetry.KeyService, c.Route.Service,
			telemetry.KeyReason, r.String(), telemetry.KeyErr, err)
	}
	panic(http.ErrAbortHandler)
}

// streamReason names why a response stream broke off.
func streamReason(ctx context.Context, err error) reason.Reason {
	if e, ok := errors.AsType[*reason.Error](err); ok {
		return e.Reason
	}
	if e, ok := errors.AsType[*reason.Error](context.Cause(ctx)); ok {
		return e.Reason
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return reason.Timeout
	case ctx.Err() != nil:
		return reason.Cancelled
	}
	return reason.StreamFailed
}

// sizedNow reports whether an answer held whole (n bytes of body, no
// trailers) can be flushed as soon as it is written: on HTTP/1.x, for a
// method and status that carry a body, with a Content-Length that a flush
// keeps (without one, net/http would switch to chunked encoding). It sets
// the Content-Length when h has none.
func sizedNow(r *http.Request, status int, h http.Header, n int) bool {
	if r == nil || r.ProtoMajor != 1 || r.Method == http.MethodHead ||
		status < http.StatusOK || status == http.StatusNoContent || status == http.StatusNotModified {
		return false
	}
	if _, ok := h["Content-Length"]; ok {
		return contentLength(h) == int64(n) // a wrong length is net/http's to answer, as before
	}
	h["Content-Length"] = []string{strconv.Itoa(n)}
	return true
}

// contentLength returns the Content-Length of h, -1 when it has none or
// it is not a number. An absent one is not parsed: ParseInt's error for
// the empty string would allocate on every answer without a length.
func contentLength(h http.Header) int64 {
	v := h["Content-Length"]
	if len(v) == 0 {
		return -1
	}
	n, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// setTrailers sets trailers after the body: those declared in the header
// under their names, the others with http.TrailerPrefix.
func setTrailers(h http.Header, trailers []string, declared []string) {
	for i := 0; i+1 < len(trailers); i += 2 {
		name := http.CanonicalHeaderKey(trailers[i])
		if !httpguts.ValidTrailerHeader(name) || !httpguts.ValidHeaderFieldValue(trailers[i+1]) {
			continue
		}
		if !slices.Contains(declared, name) {
			name = http.TrailerPrefix + name
		}
		h.Add(name, trailers[i+1])
	}
}

// refuseHTTP answers a request the mesh refuses before it becomes a call
// on the bus, and counts it.
func (a *Ambassador) refuseHTTP(w http.ResponseWriter, rt *Route, e *reason.Error) {
	now := time.Now()
	c, _ := a.begin(context.Background(), rt, now, now, false)
	a.writeHTTPError(w, c, e)
	a.end(c)
}

// writeHTTPError answers a call on the mesh's behalf: the status, the
// reason in X-Busmesh-Error and a one-line text body. A call whose caller
// went away gets nothing.
func (a *Ambassador) writeHTTPError(w http.ResponseWriter, c *Call, e *reason.Error) {
	c.failedWith(e.Reason, "")
	if e.Reason == reason.Cancelled {
		return
	}
	h := w.Header()
	h.Set(HeaderError, e.Reason.String())
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(max(e.RetryAfter.Round(time.Second), time.Second)/time.Second)))
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Reason.HTTPStatus())
	fmt.Fprintf(w, "busmesh: %s\n", e.Error())
	service := ""
	if c.Route != nil {
		service = c.Route.Service
	}
	a.logger.Debug("call answered by the mesh", telemetry.KeyService, service, telemetry.KeyStatus, e.Reason.HTTPStatus(),
		telemetry.KeyReason, e.Reason.String(), "detail", e.Detail)
}

// headerEntries counts the name and value entries a header takes in an
// envelope's header list.
func headerEntries(h http.Header) int {
	n := 0
	for _, vs := range h {
		n += 2 * len(vs)
	}
	return n
}
