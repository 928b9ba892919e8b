package ambassador

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/busmesh/busmesh/broker"
	"github.com/busmesh/busmesh/internal/config"
	"github.com/busmesh/busmesh/internal/envelope"
	"github.com/busmesh/busmesh/internal/stream"
)

// stallBroker stands for the bus and a serving adapter: it answers every
// request with a head and, when streamed is set, a streamed body of that
// many bytes, sent as the ambassador grants credit.
type stallBroker struct {
	head     envelope.Response
	streamed int64
	delay    time.Duration // before the answer

	mu     sync.Mutex
	inbox  broker.Handler
	grants map[uint64]chan int64
}

func (s *stallBroker) PublishReturnable(ctx context.Context, subject string, data []byte, token uint64, returned func(uint64)) error {
	req, ok, err := serviceRequest(subject, data)
	if !ok {
		return err
	}
	s.mu.Lock()
	h := s.inbox
	grants := make(chan int64, 1024)
	if s.grants == nil {
		s.grants = map[uint64]chan int64{}
	}
	s.grants[req.ID] = grants
	s.mu.Unlock()
	r := s.head
	r.ID = req.ID
	if s.streamed > 0 {
		r.More, r.ReplyTo = true, "busmesh.default.adapter.x"
	}
	go func() {
		time.Sleep(s.delay)
		h(context.Background(), r.AppendEnvelope(nil))
		if s.streamed > 0 {
			s.stream(h, req.ID, int64(req.Window), grants)
		}
	}()
	return nil
}

// stream sends the body's frames within the ambassador's window.
func (s *stallBroker) stream(h broker.Handler, id uint64, credit int64, grants chan int64) {
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	var sent int64
	for seq := uint32(1); sent < s.streamed; seq++ {
		n := min(int64(len(chunk)), s.streamed-sent)
		for credit < stream.Cost(int(n)) {
			select {
			case g := <-grants:
				credit += g
			case <-time.After(time.Minute):
				return
			}
		}
		credit -= stream.Cost(int(n))
		sent += n
		f := envelope.Frame{ID: id, Seq: seq, Data: chunk[:n], End: sent == s.streamed}
		h(context.Background(), f.AppendEnvelope(nil))
	}
}

func (s *stallBroker) Publish(ctx context.Context, subject string, data []byte) error {
	if !strings.HasPrefix(subject, "busmesh.default.adapter.") {
		return s.PublishReturnable(ctx, subject, data, 0, func(uint64) {})
	}
	_, msg, err := envelope.Unwrap(data)
	if err != nil {
		return err
	}
	var f envelope.Frame
	if err := f.Unmarshal(msg); err != nil {
		return err
	}
	s.mu.Lock()
	grants := s.grants[f.ID]
	s.mu.Unlock()
	if f.WindowUpdate > 0 && grants != nil {
		grants <- int64(f.WindowUpdate)
	}
	return nil
}

func (s *stallBroker) Subscribe(ctx context.Context, subject string, h broker.Handler) (broker.Subscription, error) {
	if subject == "busmesh.default.inbox.web-1" {
		s.mu.Lock()
		s.inbox = h
		s.mu.Unlock()
	}
	return nopSub{}, nil
}

func (s *stallBroker) QueueSubscribe(ctx context.Context, subject, group string, h broker.Handler) (broker.Subscription, error) {
	return nopSub{}, nil
}

func (s *stallBroker) Close() error { return nil }

// MaxMessageBytes lets a body of up to 1 MiB go in the request message.
func (s *stallBroker) MaxMessageBytes() int { return 1 << 20 }

// stallServer is an ambassador for service orders behind a real HTTP
// server (HTTP/1.1 and h2c, as the ambassador's own ports), which counts
// the calls whose handler has not returned.
type stallServer struct {
	a      *Ambassador
	addr   string
	active atomic.Int64
}

func newStallServer(t *testing.T, sb *stallBroker, policy *config.ServicePolicy) *stallServer {
	t.Helper()
	cfg := config.NewAmbassador()
	cfg.Service = "web"
	cfg.Timeout = config.Duration(30 * time.Second)
	cfg.Services = map[string]*config.ServicePolicy{"orders": policy}
	a, err := New(t.Context(), Options{Config: cfg, Sidecar: "web-1", Broker: sb})
	if err != nil {
		t.Fatal(err)
	}
	s := &stallServer{a: a}
	h := a.Handler("orders")
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.active.Add(1)
			defer s.active.Add(-1)
			h.ServeHTTP(w, r)
		})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// inflight is the ambassador's in-flight gauge for orders.
func (s *stallServer) inflight() float64 {
	return testutil.ToFloat64(s.a.metrics.AmbassadorInflight.WithLabelValues("web", "orders"))
}

// timeouts counts the calls to orders that ended in a timeout.
func (s *stallServer) timeouts() float64 {
	return testutil.ToFloat64(s.a.metrics.AmbassadorErrors.WithLabelValues("web", "orders", "timeout"))
}

// awaitEnded waits until no call is in progress, and fails the test if
// that takes past by.
func (s *stallServer) awaitEnded(t *testing.T, by time.Time) {
	t.Helper()
	for s.active.Load() != 0 || s.inflight() != 0 {
		if time.Now().After(by) {
			t.Fatalf("%v past the deadline, the call is still in flight (handlers %d, in-flight gauge %v)",
				time.Since(by), s.active.Load(), s.inflight())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// h2cClient speaks HTTP/2 without TLS, with prior knowledge.
func h2cClient(t *testing.T) *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protocols}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestStalledReaderAborted: a caller that reads the head of a large answer
// and then stops reading, keeping its connection open, does not hold the
// call past its deadline. The answer is aborted (HTTP/1.1: the connection
// closed short; HTTP/2: the stream reset), the call leaves the in-flight
// gauge and counts as a timeout.
func TestStalledReaderAborted(t *testing.T) {
	const timeout, slack = time.Second, 1500 * time.Millisecond
	for _, tc := range []struct {
		name     string
		h2       bool
		streamed int64 // else a whole answer of that size
		whole    int
	}{
		{"http1/streamed", false, 64 << 20, 0},
		{"http1/whole", false, 0, 16 << 20},
		{"h2c/streamed", true, 64 << 20, 0},
		{"h2c/whole", true, 0, 16 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			head := envelope.Response{Status: 200, Headers: []string{"Content-Type", "application/octet-stream"}}
			if tc.whole > 0 {
				head.Body = bytes.Repeat([]byte("y"), tc.whole)
			}
			s := newStallServer(t, &stallBroker{head: head, streamed: tc.streamed}, &config.ServicePolicy{})
			start := time.Now()
			var rest func() (int64, error) // reads what is left of the body once the call ended
			if tc.h2 {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.addr+"/big", nil)
				req.Host = "orders"
				req.Header.Set(HeaderTimeout, timeout.String())
				resp, err := h2cClient(t).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
					t.Fatalf("status %d over HTTP/%d", resp.StatusCode, resp.ProtoMajor)
				}
				rest = func() (int64, error) { return io.Copy(io.Discard, resp.Body) }
			} else {
				conn, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := io.WriteString(conn, "GET /big HTTP/1.1\r\nHost: orders\r\n"+HeaderTimeout+": "+timeout.String()+"\r\n\r\n"); err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReaderSize(conn, 4<<10)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				rest = func() (int64, error) {
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					return io.Copy(io.Discard, resp.Body)
				}
			}
			// The caller reads nothing more and keeps its connection.
			s.awaitEnded(t, start.Add(timeout+slack))
			if n := s.timeouts(); n != 1 {
				t.Errorf("%v calls counted as timeouts, want 1", n)
			}
			want := tc.streamed + int64(tc.whole)
			n, err := rest()
			if err == nil || n >= want {
				t.Errorf("the caller read %d of %d bytes, error %v: want a broken body", n, want, err)
			}
		})
	}
}

// TestAnswerDoneBeforeDeadline: an answer whose last byte was written when
// the call's context ends is not broken: its end (the last chunk, HTTP/2's
// END_STREAM) still reaches the caller.
func TestAnswerDoneBeforeDeadline(t *testing.T) {
	body := bytes.Repeat([]byte("z"), 64<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		b := boundWrites(ctx, w)
		defer b.lift()
		rc := http.NewResponseController(w)
		if err := b.write(w, body, rc); err != nil {
			t.Errorf("write: %v", err)
			return
		}
		cancel() // the deadline passes just after the last byte
		time.Sleep(50 * time.Millisecond)
		b.lift()
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protocols, Handler: h}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"http1", &http.Client{}}, {"h2c", h2cClient(t)}} {
		for range 3 {
			resp, err := c.client.Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%s: read %d of %d bytes: %v", c.name, len(got), len(body), err)
			}
		}
	}
}

// TestStalledUploadTimesOut: a caller that declares a small body, sends
// part of it and stalls gets its 504 at the call's deadline (or, with no
// deadline, its idle timeout), not when the rest of the body arrives.
func TestStalledUploadTimesOut(t *testing.T) {
	const slack = time.Second // on a busy machine; the defect took until the rest came (never)
	ok := envelope.Response{Status: 200, Body: []byte("ok")}
	for _, tc := range []struct {
		name   string
		h2     bool
		policy config.ServicePolicy
		header string // X-Busmesh-Timeout
		bound  time.Duration
	}{
		{"http1/deadline", false, config.ServicePolicy{}, "1s", time.Second},
		{"http1/idle", false, config.ServicePolicy{Timeout: config.NoTimeout, IdleTimeout: config.Timeout(time.Second)}, "", time.Second},
		{"h2c/deadline", true, config.ServicePolicy{}, "1s", time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStallServer(t, &stallBroker{head: ok}, &tc.policy)
			start := time.Now()
			var status int
			var errHeader string
			if tc.h2 {
				pr, pw := io.Pipe()
				defer pw.Close()
				go func() { _, _ = pw.Write(bytes.Repeat([]byte("a"), 10)) }()
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+s.addr+"/up", pr)
				req.Host, req.ContentLength = "orders", 100
				req.Header.Set(HeaderTimeout, tc.header)
				resp, err := h2cClient(t).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				status, errHeader = resp.StatusCode, resp.Header.Get(HeaderError)
			} else {
				conn, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				head := "POST /up HTTP/1.1\r\nHost: orders\r\nContent-Length: 100\r\n"
				if tc.header != "" {
					head += HeaderTimeout + ": " + tc.header + "\r\n"
				}
				if _, err := io.WriteString(conn, head+"\r\n"+strings.Repeat("a", 10)); err != nil {
					t.Fatal(err)
				}
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					t.Fatalf("after %v: %v", time.Since(start), err)
				}
				resp.Body.Close()
				status, errHeader = resp.StatusCode, resp.Header.Get(HeaderError)
			}
			took := time.Since(start)
			if status != http.StatusGatewayTimeout || errHeader != "timeout" {
				t.Fatalf("status %d, %s %q: want 504, timeout", status, HeaderError, errHeader)
			}
			if took > tc.bound+slack {
				t.Errorf("the 504 came after %v, want about %v", took, tc.bound)
			}
			s.awaitEnded(t, time.Now().Add(slack))
		})
	}
}

// TestSlowUploadServed: a small body that comes slowly but in time is
// served, its answer coming after the bound its read had: the bound does
// not outlive the body (net/http reads the connection in the background
// after it, and a failed read there would end the call).
func TestSlowUploadServed(t *testing.T) {
	const idle = 2 * time.Second
	sb := &stallBroker{head: envelope.Response{Status: 200, Body: []byte("ok")}, delay: 1600 * time.Millisecond}
	s := newStallServer(t, sb, &config.ServicePolicy{Timeout: config.NoTimeout, IdleTimeout: config.Timeout(idle)})
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /up HTTP/1.1\r\nHost: orders\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("a", 50)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond) // the rest of the body comes within the idle timeout
	if _, err := io.WriteString(conn, strings.Repeat("a", 50)); err != nil {
		t.Fatal(err)
	}
	// The answer comes 2.3 s after the call began: past the bound on the
	// body's read, within the idle timeout counted from the body's end.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("status %d (%s), body %q: want 200, ok", resp.StatusCode, resp.Header.Get(HeaderError), body)
	}
}
