package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/busmesh/busmesh/test/testpb"
)

// newHTTPClient returns a keep-alive client with a connection for every
// worker: no proxy from the environment, no compression, no idle expiry
// between rounds.
func newHTTPClient(maxConc int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: maxConc + 8,
		DisableCompression:  true,
	}}
}

// httpCallers POSTs the body to url and reads the echo.
func httpCallers(client *http.Client, url string) callerFactory {
	return func(size int) (caller, error) {
		payload := randomBytes(size)
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/octet-stream")
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("read answer: %w", err)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d %s", resp.StatusCode, resp.Header.Get("X-Busmesh-Error"))
			}
			if n != int64(size) {
				return fmt.Errorf("answer of %d bytes, want %d", n, size)
			}
			return nil
		}, nil
	}
}

// grpcCallers calls Echo.Unary with the body as payload.
func grpcCallers(client testpb.EchoClient) callerFactory {
	return func(size int) (caller, error) {
		req := &testpb.EchoRequest{Payload: randomBytes(size)}
		return func(ctx context.Context) error {
			resp, err := client.Unary(ctx, req)
			if err != nil {
				return err
			}
			if len(resp.Payload) != size {
				return fmt.Errorf("answer of %d bytes, want %d", len(resp.Payload), size)
			}
			return nil
		}, nil
	}
}

// rawCallers makes request/reply calls with a broker client.
func rawCallers(r requester) callerFactory {
	return func(size int) (caller, error) {
		payload := randomBytes(size)
		return func(ctx context.Context) error {
			data, err := r.request(ctx, payload)
			if err != nil {
				return err
			}
			if len(data) != size {
				return fmt.Errorf("answer of %d bytes, want %d", len(data), size)
			}
			return nil
		}, nil
	}
}

// randomBytes returns n bytes that do not compress.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}
