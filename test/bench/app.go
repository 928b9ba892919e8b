package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/busmesh/busmesh/test/testpb"
)

// maxEcho bounds what the echo application reads of a body.
const maxEcho = 8 << 20

// runApp is the application every row calls in the end: an HTTP server
// that echoes POST bodies on /echo, and the testpb Echo gRPC server.
func runApp(ctx context.Context, fs *flag.FlagSet, args []string, ready func(string)) error {
	httpAddr := fs.String("http", "127.0.0.1:0", "HTTP listen address")
	grpcAddr := fs.String("grpc", "127.0.0.1:0", "gRPC listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return fmt.Errorf("listen http: %w", err)
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		hl.Close()
		return fmt.Errorf("listen grpc: %w", err)
	}
	hs := &http.Server{Handler: echoHandler(), ReadHeaderTimeout: 10 * time.Second}
	gs := grpc.NewServer()
	testpb.RegisterEchoServer(gs, testpb.Server{})
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(hl) }()
	go func() { errc <- gs.Serve(gl) }()
	ready(hl.Addr().String() + " " + gl.Addr().String())

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	gs.Stop()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := hs.Shutdown(sctx); serr != nil && err == nil {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// echoHandler answers POST /echo with the request body, and anything else
// with "ok".
func echoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// Read all before answering: an HTTP/1 server closes the request
		// body once the response starts.
		body, err := readBody(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	return mux
}

// readBody reads a request body of up to maxEcho bytes, in one allocation
// when the length is known.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n >= 0 && n <= maxEcho {
		body := make([]byte, n)
		_, err := io.ReadFull(r.Body, body)
		return body, err
	}
	return io.ReadAll(io.LimitReader(r.Body, maxEcho))
}
