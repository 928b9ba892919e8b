package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsApp is a WebSocket application. /ws echoes every message with its
// type; on the text message "ping-me" it also pings the caller and
// reports the result on pinged; it reports how the connection ended on
// ended. /ws-bye sends three messages and closes the connection itself
// (StatusGoingAway), reporting on ended whether the caller completed the
// close handshake. /ws-too-big (wsTooBig) closes at the caller's first
// message with the connection reset. /refuse refuses the upgrade with 403.
func wsApp(ended, pinged chan<- error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		ctx := r.Context()
		for {
			typ, data, err := c.Read(ctx)
			if err != nil {
				ended <- err
				return
			}
			if string(data) == "ping-me" {
				// The loop's reads take the pong.
				go func() { pinged <- c.Ping(ctx) }()
			}
			if err := c.Write(ctx, typ, data); err != nil {
				ended <- err
				return
			}
		}
	})
	mux.HandleFunc("/ws-bye", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		for i := range 3 {
			if err := c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "bye-%d", i)); err != nil {
				ended <- err
				return
			}
		}
		ended <- c.Close(websocket.StatusGoingAway, "done")
	})
	mux.HandleFunc("/ws-too-big", wsTooBig)
	mux.HandleFunc("/upgrade-headers", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upgrade=%q settings=%q", r.Header.Get("Upgrade"), r.Header.Get("HTTP2-Settings"))
	})
	mux.HandleFunc("/refuse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", "refused")
		http.Error(w, "no websockets here", http.StatusForbidden)
	})
	return mux
}

func TestWebSocket(t *testing.T) {
	for _, b := range brokers(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			requireBroker(t, b)
			ended, pinged := make(chan error, 10), make(chan error, 10)
			m := startStreamMesh(t, b, binary, wsApp(ended, pinged))
			t.Run("Echo", func(t *testing.T) { m.testWSEcho(t, ended, pinged) })
			t.Run("CloseByApp", func(t *testing.T) { m.testWSCloseByApp(t, ended) })
			t.Run("AppClosesFirst", func(t *testing.T) { m.testWSAppClosesFirst(t, ended) })
			t.Run("ClosedWithReset", m.testWSClosedWithReset)
			t.Run("Refused", m.testWSRefused)
			t.Run("Unsupported", m.testUpgradeUnsupported)
		})
	}
}

// wsMessage is the i-th message of the echo test: 1 B to 64 KiB, text
// and binary in turn.
func wsMessage(i int) (websocket.MessageType, []byte) {
	size := 1 + (i*7919)%(64<<10)
	if i%100 == 99 {
		size = 64 << 10
	}
	data := bytes.Repeat([]byte{byte('a' + i%26)}, size)
	copy(data, fmt.Sprint(i))
	if i%2 == 0 {
		return websocket.MessageText, data
	}
	return websocket.MessageBinary, data
}

// testWSEcho sends 1,000 messages while reading their echoes, pings along
// the way (and is pinged by the app), and closes: the app must see a
// clean close.
func (m *streamMesh) testWSEcho(t *testing.T, ended, pinged <-chan error) {
	ctx := testCtx(t, 2*time.Minute)
	c, resp, err := websocket.Dial(ctx, "ws://"+m.port+"/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("X-Busmesh-Instance") == "" {
		t.Errorf("handshake: status %d, X-Busmesh-Instance %q; want 101 from an instance", resp.StatusCode, resp.Header.Get("X-Busmesh-Instance"))
	}
	c.SetReadLimit(1 << 20)
	if err := c.Write(ctx, websocket.MessageText, []byte("ping-me")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := c.Read(ctx); err != nil || string(data) != "ping-me" {
		t.Fatalf("first echo: %q, %v", data, err)
	}
	const n = 1000
	echoed := make(chan error, 1)
	go func() {
		for i := range n {
			typ, data, err := c.Read(ctx)
			if err != nil {
				echoed <- fmt.Errorf("echo %d: %w", i, err)
				return
			}
			wantTyp, want := wsMessage(i)
			if typ != wantTyp || !bytes.Equal(data, want) {
				echoed <- fmt.Errorf("echo %d: %v of %d bytes, want %v of %d bytes (out of order or damaged)", i, typ, len(data), wantTyp, len(want))
				return
			}
		}
		echoed <- nil
	}()
	var pings []time.Duration
	for i := range n {
		typ, data := wsMessage(i)
		if err := c.Write(ctx, typ, data); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i%200 == 0 {
			start := time.Now()
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("ping after message %d: %v", i, err)
			}
			pings = append(pings, time.Since(start))
		}
	}
	if err := <-echoed; err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-pinged:
		if err != nil {
			t.Errorf("the app's ping: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the app's ping got no pong")
	}
	t.Logf("%s: 1000 messages echoed in order; ping round trips %v", m.broker.name, pings)
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Errorf("close: %v, want a clean close handshake", err)
	}
	wantNormalClose(t, ended)
}

// testWSCloseByApp: the app sends three messages and closes; the caller reads them, then the close; both ends see it clean.
func (m *streamMesh) testWSCloseByApp(t *testing.T, ended <-chan error) {
	ctx := testCtx(t, 30*time.Second)
	c, _, err := websocket.Dial(ctx, "ws://"+m.port+"/ws-bye", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	for i := range 3 {
		_, data, err := c.Read(ctx)
		if err != nil || string(data) != fmt.Sprintf("bye-%d", i) {
			t.Fatalf("message %d: %q, %v", i, data, err)
		}
	}
	_, _, err = c.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("after the messages: %v, want the app's close (going away)", err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("the app's close handshake: %v, want clean", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the app's close did not complete")
	}
}

// testWSAppClosesFirst: after the close handshake the server closes the
// TCP connection first (RFC 6455, 7.1.1), and a client waits for that end
// before its close completes; the application's end must reach the
// caller. Before the ambassador half-closed through its connection
// limiter's wrapper, it never did: Chromium's close took its 2 s timeout,
// this client waited for its deadline.
func (m *streamMesh) testWSAppClosesFirst(t *testing.T, ended <-chan error) {
	conn, br := m.dialWSRaw(t, "/ws", 10*time.Second)
	// A masked close frame, 1000 (normal closure).
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x88, 0x82, mask[0], mask[1], mask[2], mask[3], 0x03 ^ mask[0], 0xe8 ^ mask[1]}
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("after %q, the read ended with %v after %v: the application's end did not reach the caller", got, err, time.Since(start).Round(time.Millisecond))
	}
	if want := []byte{0x88, 2, 0x03, 0xe8}; !bytes.Equal(got, want) {
		t.Fatalf("read %q, want the application's close frame %q, then the end", got, want)
	}
	t.Logf("%s: the application's close frame and end reached the caller %v after its close", m.broker.name, time.Since(start).Round(time.Millisecond))
	wantNormalClose(t, ended)
}

// wantNormalClose waits for the app's report of how its connection ended
// and wants a normal close.
func wantNormalClose(t *testing.T, ended <-chan error) {
	t.Helper()
	select {
	case err := <-ended:
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Errorf("the app saw the connection end with %v, want a normal close", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the app did not see the close")
	}
}

// dialWSRaw opens a WebSocket to path through the ambassador by hand, to
// see the connection itself; the connection, closed at the test's end,
// has a deadline of within from now.
func (m *streamMesh) dialWSRaw(t *testing.T, path string, within time.Duration) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", m.port, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(within))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", path)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return conn, br
}

// testWSRefused: an app that refuses the upgrade has its answer passed
// back unchanged.
func (m *streamMesh) testWSRefused(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	_, resp, err := websocket.Dial(ctx, "ws://"+m.port+"/refuse", nil)
	if err == nil {
		t.Fatal("dial succeeded, want the app's refusal")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-App") != "refused" ||
		resp.Header.Get("X-Busmesh-Error") != "" {
		t.Fatalf("refusal arrived as %+v (err %v)", resp, err)
	}
}

// wsTooBig is a WebSocket server that, as many do on a message over their
// limit, sends a close frame (1009, message too big) as soon as a message
// starts and closes its connection with the rest of that message unread,
// so that the close goes out as a reset right behind the close frame.
// Written by hand: a library would read on for the caller's close frame.
func wsTooBig(w http.ResponseWriter, r *http.Request) {
	sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(sum[:]))
	if brw.Flush() != nil {
		return
	}
	if _, err := brw.Peek(2); err != nil { // a message has started
		return
	}
	const why = "too big"
	frame := append([]byte{0x88, byte(2 + len(why)), 0x03, 0xf1}, why...) // close, 1009
	_, _ = conn.Write(frame)
}

// testWSClosedWithReset: an application's close frame reaches the caller
// although the application's connection ended with a reset right behind
// it (the caller was still sending): the bytes read before the reset are
// passed on, and then the caller's connection is closed, so its further
// writes fail, rather than left open with nobody reading it.
func (m *streamMesh) testWSClosedWithReset(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	c, _, err := websocket.Dial(ctx, "ws://"+m.port+"/ws-too-big", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 256<<10)); err != nil {
		t.Logf("write: %v (the application closed first)", err)
	}
	_, _, err = c.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
		t.Fatalf("read ended with %v (close status %d), want the application's close frame (1009)", err, got)
	}

	// The same by hand, to see the connection itself: the close frame, the
	// end, and writes that fail at once instead of filling buffers.
	conn, br := m.dialWSRaw(t, "/ws-too-big", 20*time.Second)
	// A masked binary frame of 256 KiB, of which the application reads two
	// bytes.
	header := []byte{0x82, 127, 0, 0, 0, 0, 0, 4, 0, 0, 1, 2, 3, 4}
	wrote := make(chan error, 1)
	go func() {
		if _, err := conn.Write(header); err != nil {
			wrote <- err
			return
		}
		chunk := make([]byte, 16<<10)
		for {
			if _, err := conn.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
	}()
	got, err := io.ReadAll(br)
	if want := append([]byte{0x88, 9, 0x03, 0xf1}, "too big"...); !bytes.Equal(got, want) {
		t.Fatalf("read %q (%v), want the close frame %q, then the end", got, err, want)
	}
	if err := <-wrote; errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writes after the application's reset went on until the deadline: the caller's connection was left open")
	}
}

// testUpgradeUnsupported: a CONNECT gets 501 upgrade-unsupported; an h2c
// upgrade (what curl --http2 sends on every http:// URL) is declined the
// way RFC 9110 lets a server decline one: the call is answered over
// HTTP/1.1, and the application never sees the upgrade's headers.
func (m *streamMesh) testUpgradeUnsupported(t *testing.T) {
	for _, c := range []struct {
		raw    string
		status int
		reason string
		body   string
	}{
		{"GET /upgrade-headers HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
			http.StatusOK, "", `upgrade="" settings=""`},
		{"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
			http.StatusNotImplemented, "upgrade-unsupported", ""},
	} {
		first, _, _ := strings.Cut(c.raw, "\r\n")
		conn, err := net.DialTimeout("tcp", m.port, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = conn.Write([]byte(c.raw))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			conn.Close()
			t.Errorf("%s: %v", first, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		conn.Close()
		if err != nil {
			t.Errorf("%s: body: %v", first, err)
		}
		if resp.StatusCode != c.status || resp.Header.Get("X-Busmesh-Error") != c.reason || c.body != "" && string(body) != c.body {
			t.Errorf("%s: status %d, X-Busmesh-Error %q, body %q; want %d %q %q",
				first, resp.StatusCode, resp.Header.Get("X-Busmesh-Error"), body, c.status, c.reason, c.body)
		}
	}
}
