package ambassador

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/envelope"
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

// The X-Busmesh-Error reasons the ambassador gives itself.
const (
	ReasonNoRoute           = "no-route"
	ReasonBadTimeout        = "bad-timeout"
	ReasonRequestTooLarge   = "request-too-large"
	ReasonNoResponders      = "no-responders"
	ReasonNoHealthy         = "no-healthy-instances"
	ReasonTimeout           = "timeout"
	ReasonBrokerUnavailable = "broker-unavailable"
	ReasonHeadersTooLarge   = "headers-too-large"
	ReasonStreamFailed      = "stream-failed"
)

// Handler returns the HTTP handler of a port: a per-service port when
// service is set, else the shared port, which routes by the Host header.
func (a *Ambassador) Handler(service string) http.Handler {
	if service != "" {
		r := a.routes.route(service)
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { a.serve(w, req, r) })
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r, ok := a.routes.byHost(req.Host)
		if !ok {
			a.meshError(w, "", http.StatusBadRequest, ReasonNoRoute,
				fmt.Sprintf("the Host header %q names no service; call this port with Host: <service> or <service>.mesh", req.Host))
			return
		}
		a.serve(w, req, r)
	})
}

// serve carries one HTTP call over the bus.
func (a *Ambassador) serve(w http.ResponseWriter, r *http.Request, rt route) {
	start := time.Now()
	timeout := a.cfg.Timeout.D()
	if v := r.Header.Get(HeaderTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			a.meshError(w, rt.service, http.StatusBadRequest, ReasonBadTimeout,
				fmt.Sprintf("%s: %q is not a positive duration (example: 250ms)", HeaderTimeout, v))
			return
		}
		timeout = d
	}
	if !a.available(rt) {
		a.noHealthy(w, rt)
		return
	}
	limit := int64(a.cfg.MaxBodyBytes)
	if r.ContentLength > limit {
		a.meshError(w, rt.service, http.StatusRequestEntityTooLarge, ReasonRequestTooLarge,
			fmt.Sprintf("request body of %d bytes is over max_body_bytes (%d)", r.ContentLength, limit))
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), start.Add(timeout))
	defer cancel()
	deadline, _ := ctx.Deadline()

	c := a.inbox.open()
	defer a.inbox.release(c)
	path := r.RequestURI
	if !strings.HasPrefix(path, "/") { // absolute form, as sent to a proxy
		path = r.URL.RequestURI()
	}
	req := envelope.Request{
		ID:            c.id,
		Source:        a.sidecar,
		SourceService: a.cfg.Service,
		Service:       rt.service,
		Protocol:      envelope.ProtocolHTTP,
		Method:        r.Method,
		Path:          path,
		ReplyTo:       a.inbox.subject,
		Deadline:      deadline.UnixNano(),
		Window:        stream.DefaultWindow,
		Host:          r.Host,
	}
	req.Headers = envelope.AppendHTTPHeader(c.headers[:0], r.Header)
	c.headers = req.Headers
	room := a.maxMsg - req.EncodedSize() - stream.Slack
	if room < 0 {
		a.meshError(w, rt.service, http.StatusRequestHeaderFieldsTooLarge, ReasonHeadersTooLarge,
			fmt.Sprintf("request headers do not fit the broker's %d-byte messages", a.maxMsg))
		return
	}

	// The body goes in the request message if it fits; else its first part
	// does and the rest follows in frames once an adapter accepts the call.
	bodyBuf := stream.GetBuffer()
	defer stream.PutBuffer(bodyBuf)
	body, more, err := stream.ReadFirst(r.Body, bodyBuf, min(room, stream.MaxInline), r.ContentLength)
	if err != nil {
		a.meshError(w, rt.service, http.StatusBadRequest, ReasonStreamFailed, "read request body: "+err.Error())
		return
	}
	req.Body, req.More = body, more
	if more {
		c.mu.Lock()
		c.accepted = make(chan struct{})
		c.mu.Unlock()
	}

	st, err := a.publish(ctx, rt, c, &req, nil)
	if errors.Is(err, errNoHealthy) {
		a.noHealthy(w, rt)
		return
	}
	if err != nil {
		a.publishError(w, rt.service, err)
		return
	}

	var pump chan struct{}
	if more {
		// Full duplex: an adapter may answer before it has read the body.
		_ = http.NewResponseController(w).EnableFullDuplex()
		pump = make(chan struct{})
		go func() {
			defer close(pump)
			_ = a.sendBody(ctx, c, r.Body, int64(len(body)), limit) // a failure fails the call
		}()
	}

	answered, callErr := a.await(ctx, rt, c, &req, st)
	switch {
	case answered:
		a.respond(ctx, w, rt, c, start)
	case errors.Is(callErr, stream.ErrTooLarge):
		a.meshError(w, rt.service, http.StatusRequestEntityTooLarge, ReasonRequestTooLarge,
			fmt.Sprintf("request body is over max_body_bytes (%d)", limit))
	case errors.Is(callErr, errNoResponders):
		a.meshError(w, rt.service, http.StatusServiceUnavailable, ReasonNoResponders,
			fmt.Sprintf("no instance of service %q is connected to the broker", rt.service))
	case callErr != nil:
		a.meshError(w, rt.service, http.StatusBadGateway, ReasonStreamFailed, callErr.Error())
	case r.Context().Err() != nil:
		// The caller went away; tell the service to stop.
		a.cancelRemote(c, rt, "caller cancelled")
		a.count(rt.service, 499, start)
	default:
		a.cancelRemote(c, rt, "deadline exceeded")
		a.meshError(w, rt.service, http.StatusGatewayTimeout, ReasonTimeout,
			fmt.Sprintf("no answer from service %q within %v", rt.service, timeout))
	}
	if pump != nil {
		cancel()
		<-pump
	}
}

// sendBody streams the rest of a request body once the adapter accepts.
func (a *Ambassador) sendBody(ctx context.Context, c *call, body io.Reader, sent, limit int64) error {
	s, err := a.sender(ctx, c)
	if err != nil {
		return err
	}
	buf := make([]byte, a.chunk)
	_, err = s.Copy(ctx, body, buf, true, sent, limit, nil)
	if err != nil && ctx.Err() == nil {
		_ = stream.Cancel(context.WithoutCancel(ctx), a.broker, s.Subject, c.id, a.sidecar, err.Error())
		c.fail(c.id, err) // answers the caller now, unless the adapter already has
	}
	return err
}

// respond writes the adapter's answer: status, headers, body (streamed if
// it comes in frames, until ctx's deadline) and trailers.
func (a *Ambassador) respond(ctx context.Context, w http.ResponseWriter, rt route, c *call, start time.Time) {
	resp := &c.resp
	h := w.Header()
	envelope.SetHTTPHeader(h, resp.Headers)
	if resp.Instance != "" {
		h.Set(HeaderInstance, resp.Instance)
	}
	if resp.Error != "" {
		h[HeaderError] = []string{resp.Error}
		a.metrics.AmbassadorErrors.WithLabelValues(rt.service, resp.Error).Inc()
	}
	status := int(resp.Status)
	if status < 100 || status > 999 {
		status = http.StatusBadGateway
	}
	w.WriteHeader(status)
	a.count(rt.service, status, start)
	if len(resp.Body) > 0 {
		if _, err := w.Write(resp.Body); err != nil {
			a.cancelRemote(c, rt, "caller went away")
			return
		}
	}
	if !resp.More {
		setTrailers(h, resp.Trailers)
		return
	}
	c.mu.Lock()
	in, peer := c.inbound, c.peer
	c.mu.Unlock()
	rc := http.NewResponseController(w)
	for {
		chunk, grant, err := in.Next(ctx)
		if err == io.EOF {
			setTrailers(h, in.Trailers())
			return
		}
		if err != nil {
			a.logger.Debug("response stream failed", telemetry.KeyService, rt.service, telemetry.KeyErr, err)
			a.cancelRemote(c, rt, err.Error())
			// The status is sent: abort the connection so the caller sees
			// a broken body, not a short one that looks complete.
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(chunk.Data); err != nil {
			a.cancelRemote(c, rt, "caller went away")
			return
		}
		_ = rc.Flush()
		if grant > 0 && peer != "" {
			_ = stream.Grant(ctx, a.broker, peer, c.id, a.sidecar, grant)
		}
	}
}

// setTrailers sets trailers after the body, with http.TrailerPrefix since
// they were not announced in the header.
func setTrailers(h http.Header, trailers []string) {
	for i := 0; i+1 < len(trailers); i += 2 {
		h.Add(http.TrailerPrefix+trailers[i], trailers[i+1])
	}
}

// cancelRemote tells the serving adapter to stop a call: directly when it
// is known, else through the service's cancel subject.
func (a *Ambassador) cancelRemote(c *call, rt route, reason string) {
	c.mu.Lock()
	peer := c.peer
	c.mu.Unlock()
	subject := peer
	if subject == "" {
		subject = a.subjects.Cancel(rt.service)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := stream.Cancel(ctx, a.broker, subject, c.id, a.sidecar, reason); err != nil {
		a.logger.Debug("cancel not sent", telemetry.KeySubject, subject, telemetry.KeyErr, err)
	}
}

// noHealthy answers a call no instance may take.
func (a *Ambassador) noHealthy(w http.ResponseWriter, rt route) {
	detail := fmt.Sprintf("no healthy instance of service %q is known", rt.service)
	if rt.policy.Version != "" {
		detail = fmt.Sprintf("no healthy instance of service %q at version %q is known", rt.service, rt.policy.Version)
	}
	a.meshError(w, rt.service, http.StatusServiceUnavailable, ReasonNoHealthy, detail)
}

// publishError answers a call whose request could not be published.
func (a *Ambassador) publishError(w http.ResponseWriter, service string, err error) {
	switch {
	case errors.Is(err, broker.ErrTooLarge):
		a.meshError(w, service, http.StatusRequestEntityTooLarge, ReasonRequestTooLarge, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		a.meshError(w, service, http.StatusGatewayTimeout, ReasonTimeout, err.Error())
	default:
		a.meshError(w, service, http.StatusServiceUnavailable, ReasonBrokerUnavailable, err.Error())
	}
}

// meshError answers a call on the mesh's behalf: the status, the reason in
// X-Busmesh-Error and a one-line text body.
func (a *Ambassador) meshError(w http.ResponseWriter, service string, status int, reason, detail string) {
	h := w.Header()
	h.Set(HeaderError, reason)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "busmesh: %s: %s\n", reason, detail)
	a.metrics.AmbassadorErrors.WithLabelValues(service, reason).Inc()
	a.metrics.AmbassadorRequests.WithLabelValues(service, telemetry.Code(status)).Inc()
	a.logger.Debug("call answered by the mesh", telemetry.KeyService, service, telemetry.KeyStatus, status,
		telemetry.KeyReason, reason, "detail", detail)
}

func (a *Ambassador) count(service string, status int, start time.Time) {
	a.metrics.AmbassadorRequests.WithLabelValues(service, telemetry.Code(status)).Inc()
	a.metrics.AmbassadorDuration.WithLabelValues(service).Observe(time.Since(start).Seconds())
}
