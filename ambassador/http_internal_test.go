package ambassador

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wholeHandler answers as respondHTTP does for a whole answer: the
// envelope's headers, status and body, then flushWhole when flush is set.
// after runs once the answer is written, as the call's bookkeeping would.
func wholeHandler(flush bool, status int, header map[string]string, body string, after func()) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the ambassador reads a whole request first
		c := &Call{}
		c.http.r = r
		c.Req.Method = r.Method
		h := w.Header()
		for k, v := range header {
			h.Set(k, v)
		}
		w.WriteHeader(status)
		if body != "" {
			_, _ = io.WriteString(w, body)
		}
		if flush {
			flushWhole(w, c, h, len(body))
		}
		if after != nil {
			after()
		}
	}
}

// serveRaw serves h on a loopback listener and returns its address.
func serveRaw(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

var dateLine = regexp.MustCompile(`(?m)^Date: .*\r\n`)

// TestFlushWholeBytes checks that flushing a whole answer early sends the
// bytes net/http sends when the handler returns, for the requests and
// answers whose framing depends on the moment the head is written.
func TestFlushWholeBytes(t *testing.T) {
	cl := func(s string) map[string]string {
		return map[string]string{"Content-Length": strconv.Itoa(len(s)), "Content-Type": "text/plain"}
	}
	tests := []struct {
		name    string
		request string
		status  int
		header  map[string]string
		body    string
	}{
		{"HTTP/1.1 POST", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200, cl("hello"), "hello"},
		{"HTTP/1.1 GET, no type", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, map[string]string{"Content-Length": "14"}, "<html></html>\n"},
		{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, cl("ok"), "ok"},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", 200, cl("ok"), "ok"},
		{"HEAD", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 200, map[string]string{"Content-Length": "100"}, ""},
		{"HEAD, empty", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", 200, map[string]string{"Content-Length": "0"}, ""},
		{"204", "DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", 204, nil, ""},
		{"204, Content-Length 0", "DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n", 204, map[string]string{"Content-Length": "0"}, ""},
		{"304, Content-Length 0", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 304, map[string]string{"Content-Length": "0"}, ""},
		{"304", "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"a\"\r\n\r\n", 304, map[string]string{"Etag": `"a"`}, ""},
		{"no Content-Length", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, nil, "small"},
		{"empty body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, map[string]string{"Content-Length": "0"}, ""},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 200, cl("bye"), "bye"},
		{"Expect: 100-continue", "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc", 201, cl("made"), "made"},
		{"chunked request", "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 200, cl("ok"), "ok"},
		{"error status", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 503, cl("down"), "down"},
	}
	// A second request on the same connection shows how the first answer
	// ended (kept alive or closed) and reads it to the end.
	const next = "GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
	exchange := func(t *testing.T, flush bool, request string, status int, header map[string]string, body string) string {
		mux := http.NewServeMux()
		mux.Handle("/next", wholeHandler(false, 200, cl("next"), "next", nil))
		mux.Handle("/", wholeHandler(flush, status, header, body, nil))
		conn, err := net.Dial("tcp", serveRaw(t, mux))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, request+next); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn)
		if err != nil {
			t.Fatal(err)
		}
		return dateLine.ReplaceAllString(string(got), "Date: -\r\n")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := exchange(t, false, tt.request, tt.status, tt.header, tt.body)
			got := exchange(t, true, tt.request, tt.status, tt.header, tt.body)
			if got != want {
				t.Errorf("flushed early:\n%q\nwhen the handler returns:\n%q", got, want)
			}
		})
	}
}

// TestFlushWholeSendsAtOnce checks that a whole answer reaches the caller
// while the call's bookkeeping still runs, and that one whose framing
// would change (no Content-Length) waits for the handler to return.
func TestFlushWholeSendsAtOnce(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header map[string]string
		early  bool
	}{
		{"Content-Length", map[string]string{"Content-Length": "5"}, true},
		{"no Content-Length", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			addr := serveRaw(t, wholeHandler(true, 200, tt.header, "hello", func() { <-release }))
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			wait := 5 * time.Second
			if !tt.early {
				wait = 300 * time.Millisecond
			}
			_ = conn.SetReadDeadline(time.Now().Add(wait))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if !tt.early {
				if err == nil {
					t.Fatalf("an answer without Content-Length came before the handler returned: %v", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatalf("no answer while the handler runs: %v", err)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != "hello" || strings.Join(resp.TransferEncoding, ",") != "" {
				t.Fatalf("body %q, %v, transfer encoding %v", b, err, resp.TransferEncoding)
			}
		})
	}
}
