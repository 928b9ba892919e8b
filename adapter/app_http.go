package adapter

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/busmesh/busmesh/internal/bus"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// httpApp is an HTTP application.
type httpApp struct {
	target  string           // scheme://host[/base], no trailing slash
	host    string           // host:port, for upgrades
	tls     *tls.Config      // for an https target: the Transport's, and upgrades' with HTTP/1.1 asked for
	client  *http.Client     // for health checks
	direct  *directTransport // client's transport, which calls take straight
	limit   int64            // the response cap; math.MaxInt64 for none
	health  *config.Health
	ownHost bool // adapter.host: target: the application gets the target's host
}

// newHTTPApp returns the client of the HTTP application at target, over
// TLS with tlsCfg when target is https.
func newHTTPApp(target string, tlsCfg *tls.Config, cfg *config.Adapter) *httpApp {
	limit := int64(cfg.MaxBodyBytes)
	if limit <= 0 {
		limit = math.MaxInt64
	}
	client := newClient(cfg.Concurrency, tlsCfg)
	h := &httpApp{target: target, client: client, direct: client.Transport.(*directTransport), limit: limit, health: cfg.Health,
		ownHost: cfg.Host == config.HostTarget}
	if tlsCfg != nil {
		h.tls = tlsCfg.Clone()
		h.tls.NextProtos = []string{"http/1.1"}
	}
	if u, err := url.Parse(target); err == nil {
		h.host = u.Host
		if u.Port() == "" {
			port := "80"
			if u.Scheme == "https" {
				port = "443"
			}
			h.host = net.JoinHostPort(u.Hostname(), port)
		}
	}
	return h
}

// newClient is the HTTP client of the local application: no proxy from the
// environment, no redirects followed and no transparent decompression,
// because the adapter passes the application's answers through as they are.
// tlsCfg is for an https application (nil: the defaults).
func newClient(concurrency int, tlsCfg *tls.Config) *http.Client {
	dial := (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	transport := &http.Transport{
		DialContext:         answerFirst(dial),
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 5 * time.Second, // as the dial's: a stuck handshake must not hold a worker
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &http.Client{
		Transport:     newDirectTransport(dial, transport, concurrency),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (h *httpApp) grpc() bool { return false }

// setHost gives a request to the application the caller's Host, as a
// transparent proxy passes it: the application builds its links and
// redirects and checks a WebSocket's Origin against the name its callers
// use, not its own local address. With adapter.host: target it keeps the
// target's. X-Forwarded-Host carries the caller's either way.
func (h *httpApp) setHost(r *http.Request, host string) {
	if host == "" {
		return
	}
	if !h.ownHost {
		r.Host = host
	}
	r.Header.Set("X-Forwarded-Host", host)
}

// appHeader is the header of a call's request to the application: the
// caller's, with its trace context, and without a User-Agent of the
// adapter's own when the caller sent none (net/http writes
// Go-http-client/1.1 unless the header is present, and omits an empty one).
func appHeader(req *envelope.Request) http.Header {
	h := make(http.Header, len(req.Headers)/2+3)
	envelope.SetHTTPHeader(h, req.Headers)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = noUserAgent
	}
	if req.TraceParent != "" {
		h.Set("Traceparent", req.TraceParent)
		if req.TraceState != "" {
			h.Set("Tracestate", req.TraceState)
		}
	}
	return h
}

// noUserAgent is the empty User-Agent of appHeader, shared: net/http only
// reads it, and an Add to the header would append to a copy (its
// capacity is 1).
var noUserAgent = []string{""}

// clientError says a failed call as net/http's Client.Do would:
// `Post "http://…": …`, and a plain-HTTP answer to a TLS handshake as
// http.ErrSchemeMismatch.
func clientError(req *http.Request, err error) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && string(rh.RecordHeader[:]) == "HTTP/" {
		err = http.ErrSchemeMismatch
	}
	op := "Get"
	if req.Method != "" {
		op = req.Method[:1] + strings.ToLower(req.Method[1:])
	}
	return &url.Error{Op: op, URL: req.URL.String(), Err: err}
}

func (h *httpApp) close() error {
	h.client.CloseIdleConnections()
	return nil
}

// serve makes one HTTP call to the application. An answer that streams on
// after its head (Server-Sent Events, a download, an upgraded connection)
// is returned as tail, to run apart from the worker.
func (h *httpApp) serve(ctx context.Context, sc *serverCall) (tail func()) {
	req := sc.req
	if up := envelope.Upgrade(req.Headers); up != "" {
		return h.serveUpgrade(ctx, sc, up)
	}
	var body io.Reader = http.NoBody
	contentLength := int64(len(req.Body))
	var trailer http.Header
	if req.More {
		// Accept the call: the caller sends the rest of the body here.
		if err := sc.accept(ctx); err != nil {
			sc.a.logger.Debug("accept not sent", telemetry.KeyErr, err)
			return nil
		}
		contentLength = -1
		for i := 0; i+1 < len(req.Headers); i += 2 {
			if http.CanonicalHeaderKey(req.Headers[i]) == "Content-Length" {
				if n, err := strconv.ParseInt(req.Headers[i+1], 10, 64); err == nil {
					contentLength = n
				}
			}
		}
		rest := sc.body(ctx)
		if contentLength < 0 {
			// Chunked: the caller's trailers, declared or not, follow
			// the body; they are known when it ends.
			trailer = make(http.Header)
			for _, name := range envelope.TrailerNames(req.Headers) {
				trailer[name] = nil
			}
			rest = &trailerReader{r: rest, in: sc.inbound, dst: trailer}
		}
		body = io.MultiReader(bytes.NewReader(req.Body), rest)
	} else if len(req.Body) > 0 {
		body = bytes.NewReader(req.Body)
	}

	// The application's call outlives its caller by up to appGrace: a
	// worker (a place in concurrency) is held until the application has
	// answered, not freed while it still works on an abandoned call.
	appCtx, call := appContext(ctx)
	detached := false
	defer func() {
		if !detached {
			call.stop()
		}
	}()
	httpReq, err := http.NewRequestWithContext(appCtx, req.Method, h.target+req.Path, body)
	if err != nil {
		sc.fail(ctx, reason.BadRequest, err.Error())
		return nil
	}
	httpReq.ContentLength = contentLength
	httpReq.Trailer = trailer
	httpReq.Header = appHeader(req)
	h.setHost(httpReq, req.Host)

	// The transport itself, not Client.Do: a call follows no redirects,
	// and the Client would copy the headers and URL of every call for
	// them.
	resp, err := h.direct.RoundTrip(httpReq)
	if err != nil {
		err = clientError(httpReq, err)
	}
	if err == nil && ctx.Err() != nil {
		resp.Body.Close()
	}
	if err != nil || ctx.Err() != nil {
		// Past its deadline or cancelled, the caller is not waiting for
		// an answer any more: none is sent.
		if ctx.Err() == nil {
			sc.fail(ctx, reason.AppUnreachable, err.Error())
		}
		return nil
	}
	call.answer()
	rest := h.forward(ctx, sc, resp)
	if rest == nil {
		return nil
	}
	// The answer streams on (events, a download): the rest goes apart
	// from the worker, and the call to the application ends with it.
	detached = true
	return func() {
		defer call.stop()
		rest()
	}
}

// inHand reports whether the first n bytes of an answer's body can be read
// at once; a body that cannot tell is taken as still coming.
func inHand(body io.Reader, n int64) bool {
	if n == 0 || body == http.NoBody {
		return true
	}
	h, ok := body.(interface{ inHand(n int64) bool })
	return ok && h.inHand(n)
}

// forward sends the application's response to the caller: in the
// response message if it fits and is there, else streamed in frames under
// the caller's window, each part as soon as the application has sent it.
// A body over the cap gets 502 before the head is sent, and is aborted
// (the caller's client sees an error) after. When the answer streams on
// after its head, forward returns the rest, which closes resp.Body; else
// nil, with resp.Body closed.
func (h *httpApp) forward(ctx context.Context, sc *serverCall, resp *http.Response) (rest func()) {
	var prompt *stream.Prompt
	buf := bus.GetBuffer()
	defer func() {
		if rest == nil {
			releaseBody(resp, prompt, buf)
		}
	}()
	if resp.ContentLength > h.limit && sc.req.Method != http.MethodHead {
		sc.fail(ctx, reason.ResponseTooLarge, fmt.Sprintf("response body of %d bytes is over max_body_bytes (%d)", resp.ContentLength, h.limit))
		return nil
	}
	out := envelope.Response{Status: int32(resp.StatusCode)}
	out.Headers = envelope.AppendHTTPHeader(make([]string, 0, 2*len(resp.Header)+2), resp.Header)
	out.Headers = envelope.AppendTrailerNames(out.Headers, resp.Trailer)
	sc.head(&out, false)
	// The caller's window bounds the body in the head too: a caller short
	// of memory (stream.Budget) offers a small one.
	room := min(sc.a.pub.MaxMessage()-out.EncodedSize()-stream.Slack, stream.MaxInline, sc.window0())
	if room < 0 {
		sc.fail(ctx, reason.ResponseTooLarge, "response headers do not fit a broker message")
		return nil
	}
	var first []byte
	var more bool
	var err error
	var body io.Reader = resp.Body
	if resp.ContentLength >= 0 && resp.ContentLength <= int64(room) && inHand(resp.Body, resp.ContentLength) {
		// Whole and here: one message, no goroutine.
		first, more, err = stream.ReadFirst(resp.Body, buf, room, resp.ContentLength)
	} else {
		// Still coming: what comes within stream.Settle goes with the
		// head, the rest in frames as it comes. A declared length is no
		// promise that the body is near (a download from a slow source,
		// bytes dripped on purpose): it is read as if unknown, so that
		// the head does not wait for the last byte.
		prompt = new(stream.Prompt)
		body = prompt
		declared := resp.ContentLength
		if declared > 0 && declared <= int64(room) {
			declared = -1
		}
		first, more, err = prompt.First(resp.Body, buf, room, declared, stream.Settle)
	}
	if err != nil {
		sc.fail(ctx, reason.AppUnreachable, "read response body: "+err.Error())
		return nil
	}
	if int64(len(first)) > h.limit {
		sc.fail(ctx, reason.ResponseTooLarge, fmt.Sprintf("response body is over max_body_bytes (%d)", h.limit))
		return nil
	}
	sc.head(&out, more)
	out.Body = first
	if !more {
		out.Trailers = envelope.AppendHTTPHeader(nil, resp.Trailer)
	}
	if !sc.answer(ctx, &out) || !more {
		return nil
	}
	sent, p := int64(len(first)), prompt // copies: the closure must not move them to the heap
	return func() {
		// The first message's buffer (up to 1 MiB) goes back as soon as it
		// holds nothing unread, not when the stream ends: a long or stalled
		// stream holds only its chunk.
		held := buf
		defer func() { releaseBody(resp, p, held) }()
		if p == nil {
			bus.PutBuffer(held)
			held = nil
		} else {
			body = &drainedReader{p: p, buf: &held}
		}
		chunk := make([]byte, min(sc.a.chunk, sc.window0())) // frames never exceed the window
		trailers := func() []string { return envelope.AppendHTTPHeader(nil, resp.Trailer) }
		if _, err := sc.sender().Copy(ctx, body, chunk, false, sent, h.limit, trailers); err != nil && ctx.Err() == nil {
			r := reason.AppUnreachable
			if errors.Is(err, stream.ErrTooLarge) {
				r = reason.ResponseTooLarge
				sc.a.logger.Warn("response aborted after its status", telemetry.KeyReason, r.String(),
					"max_body_bytes", h.limit, telemetry.KeyErr, err)
			}
			sc.abort(ctx, r, err)
		}
	}
}

// releaseBody closes an answer's body, ends a read of it in progress, and
// returns its buffer (nil when returned already).
func releaseBody(resp *http.Response, prompt *stream.Prompt, buf *[]byte) {
	resp.Body.Close()
	if prompt != nil {
		prompt.Wait()
	}
	if buf != nil {
		bus.PutBuffer(buf)
	}
}

// drainedReader reads the rest of an answer through its Prompt and
// returns the first message's buffer once the Prompt has drained it.
type drainedReader struct {
	p   *stream.Prompt
	buf **[]byte
}

func (d *drainedReader) Read(b []byte) (int, error) {
	n, err := d.p.Read(b)
	if *d.buf != nil && d.p.Drained() {
		bus.PutBuffer(*d.buf)
		*d.buf = nil
	}
	return n, err
}

// trailerReader reads a streamed request body and, at its end, sets the
// trailers that came with the end frame, for the client to send after the
// body.
type trailerReader struct {
	r   io.Reader
	in  *stream.Inbound
	dst http.Header
}

func (t *trailerReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.EOF {
		envelope.SetHTTPHeader(t.dst, t.in.Trailers())
	}
	return n, err
}

// check GETs the health path: 2xx and 3xx are healthy.
func (h *httpApp) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.target+h.health.HTTP, nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: status %d", h.health.HTTP, resp.StatusCode)
	}
	return nil
}

// appGrace is how long the application's call may outlive its caller.
const appGrace = time.Second

// appContext returns the context of the call to the application: until
// the call's answer is called it ends appGrace after ctx does, after
// that as soon as ctx does (a streamed answer stops with its caller). The
// call's stop releases it. One watch of ctx serves both phases (two
// context.AfterFuncs and their closures cost the call a dozen allocations).
func appContext(ctx context.Context) (context.Context, *appCall) {
	appCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &appCall{cancel: cancel}
	c.unwatch = context.AfterFunc(ctx, c.callerGone)
	return appCtx, c
}

// appCall ends the context of a call to the application.
type appCall struct {
	cancel  context.CancelFunc
	unwatch func() bool

	mu       sync.Mutex
	answered bool        // the application's answer came
	gone     bool        // the caller's ctx ended
	grace    *time.Timer // cancels appGrace after gone, if not answered
}

// callerGone runs when the caller's ctx ends.
func (c *appCall) callerGone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone = true
	if c.answered {
		c.cancel()
		return
	}
	c.grace = time.AfterFunc(appGrace, c.cancel)
}

// answer marks the application's answer come: from then on the call ends
// with its caller.
func (c *appCall) answer() {
	c.mu.Lock()
	c.answered = true
	gone := c.gone
	c.mu.Unlock()
	if gone {
		c.cancel()
	}
}

// stop ends the call to the application.
func (c *appCall) stop() {
	c.unwatch()
	c.mu.Lock()
	if c.grace != nil {
		c.grace.Stop()
	}
	c.mu.Unlock()
	c.cancel()
}
