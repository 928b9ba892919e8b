package adapter

import (
	"bufio"
	"bytes"
	"cmp"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// recordingConn is a net.Conn that keeps each Write's bytes, and the first
// byte's address, to tell a body sent in place from a copy.
type recordingConn struct {
	net.Conn
	writes [][]byte
	starts []*byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	if len(p) > 0 {
		c.starts = append(c.starts, &p[0])
	}
	return len(p), nil
}

func (c *recordingConn) all() []byte { return bytes.Join(c.writes, nil) }

// TestRequestWriterBytes: a request written through requestWriter is, byte
// for byte, what net/http writes through a bufio.Writer, for every kind of
// body and for a head larger than the writer's buffer.
func TestRequestWriterBytes(t *testing.T) {
	big := strings.Repeat("b", 16<<10)
	for _, tc := range []struct {
		name    string
		method  string
		body    func() io.Reader
		length  int64
		header  int // bytes of an extra header
		expect  bool
		trailer bool
	}{
		{name: "GET", method: http.MethodGet, body: func() io.Reader { return nil }},
		{name: "HEAD", method: http.MethodHead, body: func() io.Reader { return nil }},
		{name: "none", body: func() io.Reader { return nil }},
		{name: "http.NoBody", body: func() io.Reader { return http.NoBody }},
		{name: "Expect: 100-continue", body: func() io.Reader { return bytes.NewReader([]byte(big)) }, length: int64(len(big)), expect: true},
		{name: "chunked with trailers", body: func() io.Reader { return strings.NewReader(big) }, length: -1, trailer: true},
		{name: "shorter body than declared", body: func() io.Reader { return bytes.NewReader([]byte("short")) }, length: 100},
		{name: "small bytes.Reader", body: func() io.Reader { return bytes.NewReader([]byte("hello")) }, length: 5},
		{name: "16 KiB bytes.Reader", body: func() io.Reader { return bytes.NewReader([]byte(big)) }, length: int64(len(big))},
		{name: "16 KiB strings.Reader", body: func() io.Reader { return strings.NewReader(big) }, length: int64(len(big))},
		{name: "chunked", body: func() io.Reader { return io.MultiReader(strings.NewReader("ab"), strings.NewReader(big)) }, length: -1},
		{name: "head past the buffer", body: func() io.Reader { return bytes.NewReader([]byte(big)) }, length: int64(len(big)), header: 6000},
		{name: "longer body than declared", body: func() io.Reader { return bytes.NewReader([]byte(big)) }, length: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build := func() *http.Request {
				method := cmp.Or(tc.method, http.MethodPost)
				req, err := http.NewRequest(method, "http://app.local/orders?x=1", tc.body())
				if err != nil {
					t.Fatal(err)
				}
				req.ContentLength = tc.length
				if tc.header > 0 {
					req.Header.Set("X-Large", strings.Repeat("h", tc.header))
				}
				if tc.expect {
					req.Header.Set("Expect", "100-continue")
				}
				if tc.trailer {
					req.Trailer = http.Header{"X-Sum": {"42"}}
				}
				return req
			}
			var want bytes.Buffer
			bw := bufio.NewWriterSize(&want, 4096)
			wantErr := build().Write(bw)
			if wantErr == nil {
				wantErr = bw.Flush()
			}

			conn := &recordingConn{}
			w := newRequestWriter(conn)
			err := build().Write(w)
			if err == nil {
				err = w.flush()
			}
			if (err == nil) != (wantErr == nil) {
				t.Fatalf("error %v, net/http through bufio: %v", err, wantErr)
			}
			if err == nil && !bytes.Equal(conn.all(), want.Bytes()) {
				t.Fatalf("wrote %d bytes, net/http through bufio %d:\n%.300q\nwant\n%.300q", len(conn.all()), want.Len(), conn.all(), want.Bytes())
			}
		})
	}
}

// TestRequestWriterSendsBodyInPlace: a 16 KiB body in hand goes to the
// connection as it is, right after the head, not copied into a buffer
// first. Both go in one net.Buffers write, which the net package makes one
// writev on a TCP connection; this fake connection sees two Writes.
func TestRequestWriterSendsBodyInPlace(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 16<<10)
	req, err := http.NewRequest(http.MethodPost, "http://app.local/orders", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	conn := &recordingConn{}
	w := newRequestWriter(conn)
	if err := req.Write(w); err != nil {
		t.Fatal(err)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	if len(conn.writes) != 2 {
		t.Fatalf("%d writes, want the head and the body", len(conn.writes))
	}
	if !bytes.HasPrefix(conn.writes[0], []byte("POST /orders HTTP/1.1\r\n")) || !bytes.HasSuffix(conn.writes[0], []byte("\r\n\r\n")) {
		t.Fatalf("first write is not the head: %q", conn.writes[0])
	}
	if conn.starts[1] != &body[0] {
		t.Fatal("the body was copied before it was sent")
	}
	if w.vec[1] != nil {
		t.Fatal("the writer keeps the body after sending it")
	}
}

// BenchmarkRequestWrite: one 16 KiB request through requestWriter and
// through the bufio.Writer it replaced, to a loopback TCP connection
// drained by a reader. Compare ns/op and allocs/op in one run.
func BenchmarkRequestWrite(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 16<<10)
	for _, bc := range []struct {
		name  string
		write func(net.Conn) func(*http.Request) error
	}{
		{"bufio", func(c net.Conn) func(*http.Request) error {
			bw := bufio.NewWriterSize(c, 4096)
			return func(r *http.Request) error {
				if err := r.Write(bw); err != nil {
					return err
				}
				return bw.Flush()
			}
		}},
		{"requestWriter", func(c net.Conn) func(*http.Request) error {
			w := newRequestWriter(c)
			return func(r *http.Request) error {
				if err := r.Write(w); err != nil {
					return err
				}
				return w.flush()
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			addr := rawServer(b, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			write := bc.write(c)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodPost, "http://app.local/orders", bytes.NewReader(body))
				if err := write(req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
