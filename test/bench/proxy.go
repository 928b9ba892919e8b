package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// proxyIdleConns is each proxy's pool of kept-alive connections to its
// upstream. http.DefaultTransport keeps 2 per host, which would make every
// call beyond the second at c=32 open a new connection; a real sidecar
// proxy pools, so this one does too.
const proxyIdleConns = 512

// runProxy is one hop of the classic HTTP sidecar chain: an
// httputil.ReverseProxy to -upstream.
func runProxy(ctx context.Context, fs *flag.FlagSet, args []string, ready func(string)) error {
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream base URL, http://host:port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("-upstream %q is not a URL like http://127.0.0.1:8080", *upstream)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = proxyIdleConns
	transport.MaxIdleConnsPerHost = proxyIdleConns
	transport.DisableCompression = true
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
		},
		Transport: transport,
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Full duplex: without it the HTTP/1 server closes the request body
	// when the response starts, and the transport's last read of that body
	// (its check that nothing follows Content-Length) can then fail and
	// tear down the upstream connection mid-response, truncating about
	// one 16 KiB answer in a thousand (golang/go#40747).
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	ready(ln.Addr().String())
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil && err == nil {
		err = serr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
