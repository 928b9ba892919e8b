package ambassador

import (
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// TestLimitedConnCloseWrite: a connection the limiter accepted half-closes
// as the socket under it does: the peer reads the end, and can still send
// what the connection then reads. An upgraded connection whose application
// ends first relies on it.
func TestLimitedConnCloseWrite(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newConnLimiter(ln, 4, false, slog.New(slog.DiscardHandler), telemetry.NewMetrics())
	defer l.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = peer.SetDeadline(time.Now().Add(5 * time.Second))
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))

	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(peer)
	if err != nil || string(got) != "bye" {
		t.Fatalf("the peer read %q, %v; want \"bye\", then the end", got, err)
	}
	if _, err := peer.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "still here" {
		t.Fatalf("after CloseWrite the connection read %q, %v; want the peer's bytes", buf[:n], err)
	}
}
