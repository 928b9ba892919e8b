package ambassador

import (
	"context"
	"net/http"
	"strings"
)

// A gRPC client pointed at an HTTP port (they speak HTTP/2 without TLS, as
// the gRPC port does) is served as the gRPC port would serve it, rather
// than its call being carried as an HTTP request, which a gRPC application
// cannot take: one local port per service does for both protocols. On a
// per-service port the call goes to the port's service; on the shared port
// it is routed as on the gRPC port (grpc_routes, then :authority, which is
// the Host).

// isGRPC reports whether r is a gRPC call: HTTP/2 with a gRPC content type
// (not gRPC-Web's, which is plain HTTP to the mesh).
func isGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// portRouteKey is the context key of the route a per-service HTTP port
// gives a gRPC call it took.
type portRouteKey struct{}

// serveGRPCOverHTTP serves a gRPC call that came to a per-service HTTP
// port, whose route is rt (nil if it is gone): the call goes to that
// service. The shared port hands its calls to httpGRPC as they are.
func (a *Ambassador) serveGRPCOverHTTP(w http.ResponseWriter, r *http.Request, rt *Route) {
	a.httpGRPC().ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), portRouteKey{}, rt)))
}

// portRoute returns the route of the per-service HTTP port a gRPC call
// came to, and whether it came to one.
func portRoute(ctx context.Context) (*Route, bool) {
	rt, ok := ctx.Value(portRouteKey{}).(*Route)
	return rt, ok
}
