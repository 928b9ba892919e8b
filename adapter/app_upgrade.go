package adapter

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/reason"
	"github.com/busmesh/busmesh/internal/telemetry"
)

// serveUpgrade performs an HTTP/1.1 upgrade (a WebSocket) against the
// application on a connection of its own. When the application switches
// protocols, the answer's head says so and both byte streams travel as the
// call's frames until each side has ended: the caller's end frame becomes
// a half-close toward the application, the application's end the end
// frame. An application that refuses the upgrade has its answer passed
// back as any other. Once the head is sent, the relaying is returned as
// tail: an open connection does not hold a worker.
func (h *httpApp) serveUpgrade(ctx context.Context, sc *serverCall, up string) (tail func()) {
	req := sc.req
	if !req.More {
		sc.fail(ctx, reason.BadRequest, "an upgrade request must stream")
		return nil
	}
	if err := sc.accept(ctx); err != nil {
		sc.a.logger.Debug("accept not sent", telemetry.KeyErr, err)
		return nil
	}
	httpReq, err := http.NewRequestWithContext(ctx, req.Method, h.target+req.Path, http.NoBody)
	if err != nil {
		sc.fail(ctx, reason.BadRequest, err.Error())
		return nil
	}
	httpReq.Header = appHeader(req)
	httpReq.Header.Set("Connection", "Upgrade")
	httpReq.Header.Set("Upgrade", up)
	h.setHost(httpReq, req.Host)
	conn, err := h.dial(ctx)
	if err != nil {
		sc.fail(ctx, reason.AppUnreachable, err.Error())
		return nil
	}
	// Both directions end when the call does (a cancel from the caller).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	detached := false
	defer func() {
		if !detached {
			stop()
			_ = conn.Close()
		}
	}()
	if err := httpReq.Write(conn); err != nil {
		sc.fail(ctx, reason.AppUnreachable, "send upgrade request: "+err.Error())
		return nil
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, httpReq)
	if err != nil {
		sc.fail(ctx, reason.AppUnreachable, "read upgrade response: "+err.Error())
		return nil
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// Refused: the caller gets the application's answer.
		rest := h.forward(ctx, sc, resp)
		if rest == nil {
			return nil
		}
		detached = true
		return func() {
			defer func() { stop(); _ = conn.Close() }()
			rest()
		}
	}
	out := envelope.Response{Status: http.StatusSwitchingProtocols}
	out.Headers = envelope.AppendHTTPHeader(make([]string, 0, 2*len(resp.Header)+2), resp.Header)
	out.Headers = append(out.Headers, "Upgrade", resp.Header.Get("Upgrade"))
	sc.head(&out, true)
	if !sc.answer(ctx, &out) {
		return nil
	}
	detached = true
	return func() {
		defer func() { stop(); _ = conn.Close() }()
		relay(ctx, sc, conn, br)
	}
}

// relay carries an upgraded connection's bytes both ways until each
// direction has ended.
func relay(ctx context.Context, sc *serverCall, conn net.Conn, br *bufio.Reader) {
	// The caller's bytes to the application, on their own goroutine.
	toApp := make(chan struct{})
	w := &appWriter{conn: conn}
	go func() {
		defer close(toApp)
		if _, err := io.Copy(w, sc.body(ctx)); err != nil {
			sc.a.logger.Debug("upgraded stream to the application ended", telemetry.KeyErr, err)
			if w.err == nil {
				// The caller's side broke off: so does the application's.
				_ = conn.Close()
			}
			// Else the application's side broke (it closed, or reset): what
			// it sent before that is still to be read and passed on, and
			// that read ends as well.
			return
		}
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, err := sc.sender().Relay(ctx, br, sc.a.chunk)
	if err != nil && ctx.Err() == nil {
		sc.abort(ctx, reason.AppUnreachable, err)
		_ = conn.Close()
	}
	<-toApp
	if err == nil && w.err != nil && ctx.Err() == nil {
		// The application's side broke with the caller's bytes unwritten.
		// Its reset reached the write, so the read saw a plain end: the
		// caller is told the connection broke, and its side ends too.
		sc.abort(ctx, reason.AppUnreachable, w.err)
	}
}

// dial opens a connection of its own to the application, for an upgrade.
func (h *httpApp) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if h.tls == nil {
		return d.DialContext(ctx, "tcp", h.host)
	}
	td := &tls.Dialer{NetDialer: d, Config: h.tls}
	return td.DialContext(ctx, "tcp", h.host)
}

// appWriter is an upgraded connection to the application that tells its
// own write errors apart from the caller's.
type appWriter struct {
	conn net.Conn
	err  error
}

func (w *appWriter) Write(p []byte) (int, error) {
	n, err := w.conn.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}
