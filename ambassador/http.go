package ambassador

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/busmesh/busmesh/internal/bus"
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
			a.serveHTTP(w, r, rt)
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	timeout := a.cfg.Timeout.D()
	if v := r.Header.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			a.refuseHTTP(w, rt, reason.Errorf(reason.BadTimeout, "%s: %q is not a positive duration (example: 250ms)", HeaderTimeout, v))
			return
		}
		timeout = d
	}
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
	limit := int64(a.cfg.MaxBodyBytes)
	if r.ContentLength > limit {
		a.refuseHTTP(w, rt, reason.Errorf(reason.RequestTooLarge,
			"request body of %d bytes is over max_body_bytes (%d)", r.ContentLength, limit))
		return
	}
	c, ctx := a.begin(r.Context(), rt, start, start.Add(timeout), false)
	defer a.end(c)
	path := r.RequestURI
	if !strings.HasPrefix(path, "/") { // absolute form, as sent to a proxy
		path = r.URL.RequestURI()
	}
	req := &c.Req
	req.Protocol, req.Method, req.Path, req.Host = envelope.ProtocolHTTP, r.Method, path, r.Host
	req.Headers = envelope.AppendHTTPHeader(req.Headers, r.Header)
	req.TraceParent, req.TraceState = r.Header.Get("Traceparent"), r.Header.Get("Tracestate")
	c.http = httpBody{r: r, w: w, limit: limit, chunk: a.chunk}
	c.Body = &c.http
	defer c.http.release()
	if err := a.invoke(ctx, c); err != nil {
		a.writeHTTPError(w, c, meshError(err))
		return
	}
	a.respondHTTP(ctx, w, c)
}

// httpBody is an HTTP request body as a call's Body.
type httpBody struct {
	r     *http.Request
	w     http.ResponseWriter
	limit int64
	chunk int
	buf   *[]byte
	sent  int64
}

func (b *httpBody) First(room int) ([]byte, bool, error) {
	b.buf = bus.GetBuffer()
	data, more, err := stream.ReadFirst(b.r.Body, b.buf, room, b.r.ContentLength)
	if err != nil {
		return nil, false, reason.Errorf(reason.BadRequest, "read request body: %v", err)
	}
	if more {
		// Full duplex: an adapter may answer before it has read the body.
		_ = http.NewResponseController(b.w).EnableFullDuplex()
	}
	b.sent = int64(len(data))
	return data, more, nil
}

func (b *httpBody) Rest(ctx context.Context, s *stream.Sender) error {
	buf := make([]byte, b.chunk)
	_, err := s.Copy(ctx, b.r.Body, buf, true, b.sent, b.limit, nil)
	return err
}

func (b *httpBody) release() {
	if b.buf != nil {
		bus.PutBuffer(b.buf)
	}
}

// respondHTTP writes the adapter's answer: status, headers, body (streamed
// if it comes in frames, until the deadline) and trailers.
func (a *Ambassador) respondHTTP(ctx context.Context, w http.ResponseWriter, c *Call) {
	resp := c.Answer()
	h := w.Header()
	envelope.SetHTTPHeader(h, resp.Headers)
	if resp.Instance != "" {
		h.Set(HeaderInstance, resp.Instance)
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
	w.WriteHeader(status)
	if len(resp.Body) > 0 {
		if _, err := w.Write(resp.Body); err != nil {
			a.cancelRemote(c, "caller went away")
			return
		}
	}
	if !resp.More {
		setTrailers(h, resp.Trailers)
		return
	}
	frames := a.answerFrames(c)
	rc := http.NewResponseController(w)
	for {
		data, err := frames.next(ctx)
		if err == io.EOF {
			setTrailers(h, frames.in.Trailers())
			return
		}
		if err != nil {
			a.logger.Debug("response stream failed", telemetry.KeyService, c.Route.Service, telemetry.KeyErr, err)
			a.cancelRemote(c, err.Error())
			// The status is sent: abort the connection so the caller sees
			// a broken body, not a short one that looks complete.
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(data); err != nil {
			a.cancelRemote(c, "caller went away")
			return
		}
		_ = rc.Flush()
	}
}

// setTrailers sets trailers after the body, with http.TrailerPrefix since
// they were not announced in the header.
func setTrailers(h http.Header, trailers []string) {
	for i := 0; i+1 < len(trailers); i += 2 {
		h.Add(http.TrailerPrefix+trailers[i], trailers[i+1])
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
