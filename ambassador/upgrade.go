package ambassador

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/stream"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// upgradeOf returns the protocols an HTTP request asks to switch to (its
// Upgrade header, with Connection: upgrade, h2c left out: withoutH2C), or
// the method for CONNECT. A request that asked for h2c alone asks for
// nothing.
func upgradeOf(r *http.Request) (string, bool) {
	if r.Method == http.MethodConnect {
		return "", true
	}
	up := r.Header.Get("Upgrade")
	if up == "" || !httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		return "", false
	}
	if r.ProtoMajor == 1 {
		if up = withoutH2C(up); up == "" {
			return "", false
		}
	}
	return up, true
}

// carried reports whether the mesh carries an upgrade: any protocol over
// HTTP/1.1 (WebSocket above all); no CONNECT tunnels.
func carried(up string, r *http.Request) bool {
	return r.Method != http.MethodConnect && r.ProtoMajor == 1 && up != ""
}

// withoutH2C returns the protocols an HTTP/1.1 upgrade asks for, h2c
// left out: the ambassador declines h2c by answering over HTTP/1.1, as RFC
// 9110 (section 7.8) lets a server do (curl --http2 asks for it on every
// http:// URL). The ambassador's port speaks h2c with prior knowledge; the
// upgrade dance is deprecated (RFC 9113, section 3.1), and an application
// switching to it behind the mesh would switch a connection the caller
// does not hold. "" when h2c was all it asked for: the call goes on as an
// ordinary one, and the Upgrade and HTTP2-Settings headers, hop-by-hop
// (named in Connection), never reach the application.
func withoutH2C(up string) string {
	if !strings.Contains(strings.ToLower(up), "h2c") {
		return up
	}
	var kept []string
	for p := range strings.SplitSeq(up, ",") {
		p = strings.TrimSpace(p)
		if name, _, _ := strings.Cut(p, "/"); p != "" && !strings.EqualFold(name, "h2c") {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, ", ")
}

// serveUpgrade carries an HTTP/1.1 upgrade (a WebSocket): the request goes
// to the adapter as a call that streams, the adapter performs the upgrade
// against the application, and once the application has switched
// protocols, the caller's connection is taken over and both byte streams
// travel as the call's flow-controlled frames, each side's end (a
// half-close) passed on. An application that refuses the upgrade has its
// answer passed back as it is. The call's timeout bounds the wait for that
// answer; after it, only the idle timeout ends a quiet connection.
func (a *Ambassador) serveUpgrade(w http.ResponseWriter, r *http.Request, rt *Route, start time.Time, up string) {
	c, ctx := a.begin(r.Context(), rt, start, time.Time{}, false)
	defer a.end(c)
	// One watch: the call's timeout while the answer is awaited, then the
	// idle timeout.
	timeout, idle := rt.Policy.Timeout.D(), rt.Policy.IdleTimeout.D()
	switch {
	case timeout > 0:
		ctx = c.awaitHead(ctx, timeout)
	case idle > 0:
		ctx, c.idle = watchIdle(ctx, idle)
	}
	a.request(c, r)
	c.Req.Headers = append(c.Req.Headers, "Upgrade", up)
	body := &upgradeBody{ready: make(chan io.Reader, 1), chunk: a.chunk, idle: c.idle}
	c.Body = body
	defer func() {
		c.cancel()
		body.refuse()
		if c.pump != nil {
			<-c.pump
		}
	}()
	err := a.invoke(ctx, c)
	if c.idle != nil {
		c.idle.set(idle, false)
	}
	if err != nil {
		a.writeHTTPError(w, c, meshError(err))
		return
	}
	resp := c.Answer()
	if resp.Status != http.StatusSwitchingProtocols || resp.Error != "" || !resp.More {
		body.refuse()
		a.respondHTTP(ctx, w, c)
		return
	}
	a.switchProtocols(ctx, w, c, body)
}

// switchProtocols takes over the caller's connection, answers 101 with the
// application's headers, and relays bytes both ways until both have ended.
func (a *Ambassador) switchProtocols(ctx context.Context, w http.ResponseWriter, c *Call, body *upgradeBody) {
	resp := c.Answer()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		body.refuse()
		a.cancelRemote(c, "upgrade not possible")
		a.writeHTTPError(w, c, reason.Errorf(reason.UpgradeUnsupported, "the caller's connection cannot be taken over: %v", err))
		return
	}
	defer conn.Close()
	c.answeredBy(http.StatusSwitchingProtocols)
	h := make(http.Header, len(resp.Headers)/2+3)
	envelope.SetHTTPHeader(h, resp.Headers)
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", envelope.Upgrade(resp.Headers))
	if resp.Instance != "" {
		h.Set(HeaderInstance, resp.Instance)
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = h.Write(brw)
	_, _ = brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		body.refuse()
		a.cancelRemote(c, "caller went away")
		return
	}
	// Both directions end when the call does (idle timeout, cancel).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	// The caller's bytes: what the server read past the request, then the
	// connection itself (not through the server's reader, whose end would
	// cancel the request's context and so the call).
	var client io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		early, _ := brw.Peek(n)
		client = io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)
	}
	body.ready <- client
	frames := a.answerFrames(c)
	for {
		data, err := frames.next(ctx)
		if err == io.EOF {
			// The application is done sending: half-close toward the
			// caller, and let the caller's side finish. A connection that
			// cannot half-close is closed, as httputil.ReverseProxy does:
			// the caller must learn of the end.
			cw, ok := conn.(interface{ CloseWrite() error })
			if !ok || cw.CloseWrite() != nil {
				_ = conn.Close()
			}
			break
		}
		if err != nil {
			r := streamReason(ctx, err)
			if r != reason.Cancelled {
				c.out.Reason = r
				a.logger.Warn("upgraded connection broke off", telemetry.KeyService, c.Route.Service,
					telemetry.KeyReason, r.String(), telemetry.KeyErr, err)
			}
			a.cancelRemote(c, r.String())
			_ = conn.Close()
			break
		}
		c.idle.touch()
		if _, err := conn.Write(data); err != nil {
			a.cancelRemote(c, "caller went away")
			_ = conn.Close()
			break
		}
	}
	if c.pump != nil {
		<-c.pump
	}
}

// upgradeBody is the caller's side of an upgraded connection as a call's
// Body: nothing goes with the request; once the listener has switched
// protocols, what the caller sends goes in frames, its end as the end
// frame.
type upgradeBody struct {
	ready chan io.Reader // the caller's side, or closed when the upgrade did not happen
	done  bool
	chunk int
	idle  *idleWatch
}

func (b *upgradeBody) First(int) ([]byte, bool, error) { return nil, true, nil }

func (b *upgradeBody) Rest(ctx context.Context, s *stream.Sender) error {
	var r io.Reader
	select {
	case r = <-b.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r == nil { // refused: the request had no body
		return s.Send(ctx, nil, true, nil)
	}
	_, err := s.Relay(ctx, touchReader{r, b.idle}, b.chunk)
	return err
}

// refuse tells Rest that the upgrade did not happen; only the listener's
// goroutine calls it, once or more.
func (b *upgradeBody) refuse() {
	if !b.done {
		b.done = true
		close(b.ready)
	}
}
