package ambassador

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/busmesh/busmesh/internal/config"
)

// TestGRPCPortTakesKeepalivePings: a caller that pings its connection with
// no call in flight, as often as the policy allows, keeps the connection.
// With grpc-go's default policy the third such ping draws GOAWAY
// too_many_pings.
func TestGRPCPortTakesKeepalivePings(t *testing.T) {
	saved := callerKeepalive
	callerKeepalive.MinTime = 50 * time.Millisecond // the policy, scaled down
	defer func() { callerKeepalive = saved }()
	a := &Ambassador{cfg: config.NewAmbassador()}
	srv := a.newGRPCServer()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// One goroutine writes and reads: each ping after a pause, then the
	// frames up to its acknowledgement.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 5 {
		time.Sleep(100 * time.Millisecond)
		data := [8]byte{byte(i + 1)}
		if err := fr.WritePing(false, data); err != nil {
			t.Fatal(err)
		}
		for acked := false; !acked; {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("ping %d: %v", i+1, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				acked = f.IsAck() && f.Data == data
			case *http2.GoAwayFrame:
				t.Fatalf("GOAWAY %v %q at ping %d", f.ErrCode, f.DebugData(), i+1)
			}
		}
	}
}
