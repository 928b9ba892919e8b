package adapter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an application that counts the connections it takes.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func call(t *testing.T, c *http.Client, ctx context.Context, method, url, body string) (int, string, error) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return callWith(t, c, ctx, method, url, r)
}

// callWith is call with any body: one that streams, say.
func callWith(t *testing.T, c *http.Client, ctx context.Context, method, url string, r io.Reader) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Calls one after another share one kept connection, whatever their
// answers: with a body, without one (204, HEAD), after 103 Early Hints.
func TestDirectKeepsConnection(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/hints":
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		default:
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, r.Method+" "+string(b))
		}
	})
	c := newClient(4, nil)
	defer c.CloseIdleConnections()
	ctx := context.Background()
	for i := range 5 {
		if code, body, err := call(t, c, ctx, "POST", srv.URL+"/echo", "hello"); err != nil || code != 200 || body != "POST hello" {
			t.Fatalf("call %d: %d %q %v", i, code, body, err)
		}
		if code, _, err := call(t, c, ctx, "GET", srv.URL+"/empty", ""); err != nil || code != 204 {
			t.Fatalf("call %d to /empty: %d %v", i, code, err)
		}
		if code, body, err := call(t, c, ctx, "HEAD", srv.URL+"/echo", ""); err != nil || code != 200 || body != "" {
			t.Fatalf("HEAD %d: %d %q %v", i, code, body, err)
		}
		if code, body, err := call(t, c, ctx, "GET", srv.URL+"/hints", ""); err != nil || code != 200 || body != "after hints" {
			t.Fatalf("call %d to /hints: %d %q %v", i, code, body, err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 calls took %d connections, want 1", n)
	}
}

// A kept connection the application closed while it was idle is noticed
// before it is used: a POST, which may not be sent twice, still succeeds.
func TestDirectNoticesClosedConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { // one answer per connection, which then closes without saying so
				defer nc.Close()
				req, err := http.ReadRequest(bufio.NewReader(nc))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				io.WriteString(nc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	c := newClient(4, nil)
	defer c.CloseIdleConnections()
	for i := range 3 {
		if code, body, err := call(t, c, context.Background(), "POST", "http://"+ln.Addr().String()+"/", "x"); err != nil || body != "ok" {
			t.Fatalf("call %d: %d %q %v", i, code, body, err)
		}
		time.Sleep(20 * time.Millisecond) // the application closes its side
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (one per call)", n)
	}
}

// A cancelled call ends at once with its context's error, and its
// connection is not kept; a body closed before its end does not keep its
// connection either.
func TestDirectCancelAndEarlyClose(t *testing.T) {
	release := make(chan struct{})
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		if r.URL.Path == "/big" {
			io.WriteString(w, strings.Repeat("x", 1<<20))
			return
		}
		io.WriteString(w, "fast")
	})
	defer close(release)
	c := newClient(4, nil)
	defer c.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := call(t, c, ctx, "GET", srv.URL+"/slow", "")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("a call past its deadline: %v after %v, want context.DeadlineExceeded at once", err, time.Since(start))
	}

	req, _ := http.NewRequest("GET", srv.URL+"/big", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 10))
	resp.Body.Close()

	if code, body, err := call(t, c, context.Background(), "GET", srv.URL+"/fast", ""); err != nil || code != 200 || body != "fast" {
		t.Fatalf("after: %d %q %v", code, body, err)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (neither the cancelled nor the half-read one kept)", n)
	}
}

// A request body that is still arriving goes through net/http's Transport,
// chunked, with its trailers.
func TestDirectFallsBackForStreamedBody(t *testing.T) {
	srv, _ := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, string(b)+" "+r.Trailer.Get("X-Sum"))
	})
	c := newClient(4, nil)
	defer c.CloseIdleConnections()
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", srv.URL+"/", pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sum": nil}
	go func() {
		io.WriteString(pw, "streamed")
		req.Trailer.Set("X-Sum", "42") // known once the body has ended
		pw.Close()
	}()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "streamed 42" {
		t.Fatalf("got %q, want the streamed body and its trailer", b)
	}
}

// An application that answers before it has read the whole request (413)
// and closes has its answer read, not taken for a broken connection.
func TestDirectEarlyAnswer(t *testing.T) {
	addr := rawServer(t, func(nc net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(nc)); err != nil {
			return
		}
		io.WriteString(nc, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
	})
	c := newClient(4, nil)
	defer c.CloseIdleConnections()
	code, body, err := call(t, c, context.Background(), "POST", "http://"+addr+"/", strings.Repeat("x", 16<<20))
	if err != nil || code != http.StatusRequestEntityTooLarge || body != "too big!" {
		t.Fatalf("got %d %q %v, want the application's 413", code, body, err)
	}
}

// A streamed request body goes through net/http's Transport, whose failed
// write raced the application's early answer: an application that answers
// (413) and closes with the request unread (a reset) has its answer passed
// on, every time; one that resets without answering fails the call.
func TestStreamedBodyEarlyAnswer(t *testing.T) {
	answer := rawServer(t, func(nc net.Conn) {
		br := bufio.NewReader(nc)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.CopyN(io.Discard, req.Body, 64<<10)
		io.WriteString(nc, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
		// Closing with the rest of the request unread resets the connection.
	})
	reset := rawServer(t, func(nc net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(nc))
		if err != nil {
			return
		}
		_, _ = io.CopyN(io.Discard, req.Body, 64<<10)
	})
	c := newClient(4, nil)
	defer c.CloseIdleConnections()
	post := func(addr string) (int, string, error) {
		pr, pw := io.Pipe()
		go func() {
			chunk := bytes.Repeat([]byte("x"), 32<<10)
			for range 256 { // 8 MiB, far more than the application reads
				if _, err := pw.Write(chunk); err != nil {
					return
				}
			}
			pw.Close()
		}()
		defer pr.CloseWithError(errors.New("call over"))
		return callWith(t, c, context.Background(), "POST", "http://"+addr+"/", pr)
	}
	for i := range 20 {
		if code, body, err := post(answer); err != nil || code != http.StatusRequestEntityTooLarge || body != "too big!" {
			t.Fatalf("call %d: got %d %q %v, want the application's 413", i, code, body, err)
		}
	}
	if code, _, err := post(reset); err == nil {
		t.Fatalf("a reset with no answer gave %d, want an error", code)
	}
}

// TestDirectCancelDuringWrite: a call cancelled while its request is still
// being written (the application has stopped reading it) ends at once; the
// wait for an early answer after a failed write does not undo the cancel.
func TestDirectCancelDuringWrite(t *testing.T) {
	addr := rawServer(t, func(net.Conn) {
		<-t.Context().Done() // reads nothing, answers nothing
	})
	c := newClient(1, nil)
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	body := bytes.Repeat([]byte("x"), 64<<20) // more than the sockets' buffers take
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/upload", bytes.NewReader(body))
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Transport.RoundTrip(req)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if took := time.Since(start); took >= earlyAnswerWait {
		t.Fatalf("returned %v after the call began, want soon after the cancel at 100ms (not after the %v wait for an early answer)", took, earlyAnswerWait)
	}
}

// rawServer serves each connection to a loopback address with serve, then
// closes it; it returns the address. The listener closes with tb.
func rawServer(tb testing.TB, serve func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				serve(nc)
			}()
		}
	}()
	return ln.Addr().String()
}

// An answer's body is in hand when it came with the head or waits in the
// socket, and not when some of it is still to come: only then does the
// adapter read it whole before it answers (forward).
func TestDirectBodyInHand(t *testing.T) {
	rest := make(chan struct{})
	addr := rawServer(t, func(nc net.Conn) {
		br := bufio.NewReader(nc)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n := 20000 // over the connection's 4 KiB read buffer
			body := bytes.Repeat([]byte("x"), n)
			head := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", n)
			if req.URL.Path == "/whole" {
				_, _ = nc.Write(append([]byte(head), body...))
				continue
			}
			_, _ = nc.Write(append([]byte(head), body[:n/2]...))
			<-rest
			_, _ = nc.Write(body[n/2:])
		}
	})
	tr := newClient(1, nil).Transport.(*directTransport)
	defer tr.CloseIdleConnections()
	for _, tt := range []struct {
		path string
		want bool
	}{{"/whole", true}, {"/half", false}} {
		req, _ := http.NewRequest("GET", "http://"+addr+tt.path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		var got bool
		if tt.want {
			// The peer's one write may reach the socket in pieces: in hand
			// once all of it has come, which is soon.
			for deadline := time.Now().Add(2 * time.Second); !got && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				got = inHand(resp.Body, resp.ContentLength)
			}
		} else {
			time.Sleep(100 * time.Millisecond) // half of it, and no more, has come
			got = inHand(resp.Body, resp.ContentLength)
		}
		if got != tt.want {
			t.Errorf("%s: in hand %v, want %v", tt.path, got, tt.want)
		}
		if !tt.want {
			close(rest)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || len(b) != 20000 {
			t.Fatalf("%s: %d bytes, %v", tt.path, len(b), err)
		}
	}
	if !inHand(http.NoBody, 0) {
		t.Error("an empty body is not in hand")
	}
}
