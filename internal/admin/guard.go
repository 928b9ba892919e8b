package admin

import (
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
)

// TokenHeader carries the admin token: "Authorization: Bearer <token>",
// over HTTP and as gRPC metadata alike.
const TokenHeader = "Authorization"

// openPaths are what scrapers and probes read: never guarded, so the admin
// port can face Prometheus and the kubelet off loopback.
var openPaths = map[string]bool{"/metrics": true, "/healthz": true, "/readyz": true}

// readOnlyRPCs are the Admin API methods that only read. Call, the route
// changes, pprof and anything that is not a GET are privileged.
var readOnlyRPCs = map[string]bool{
	"/busmesh.v1.Admin/ListServices": true,
	"/busmesh.v1.Admin/GetStats":     true,
	"/busmesh.v1.Admin/ListRoutes":   true,
	"/busmesh.v1.Admin/GetHealth":    true,
	"/busmesh.v1.Admin/GetTraffic":   true, // as GET /v1/traffic, which busmesh top reads
}

// guard lets privileged requests through only with the admin token, or,
// when no token is set, only from a loopback peer: moving the admin port
// off loopback for Prometheus then exposes no call endpoint and no
// profiler. Privileged: the Admin API's Call (POST /v1/call or gRPC), its
// route changes (PUT, PATCH and DELETE /v1/routes/{service}, SetTraffic,
// ShiftTraffic and ResetTraffic), /debug/pprof/, and any request that is not a GET or HEAD.
func guard(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !privileged(r) || allowed(r, token) {
			next.ServeHTTP(w, r)
			return
		}
		if isGRPC(r) {
			w.Header().Set("Content-Type", "application/grpc")
			w.Header().Set("Grpc-Status", "16") // Unauthenticated
			w.Header().Set("Grpc-Message", "admin token required")
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="busmesh admin"`)
		http.Error(w, "admin token required: set Authorization: Bearer <admin_token> (BUSMESH_ADMIN_TOKEN)", http.StatusUnauthorized)
	})
}

func isGRPC(r *http.Request) bool {
	return r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

func privileged(r *http.Request) bool {
	if isGRPC(r) {
		return !readOnlyRPCs[r.URL.Path]
	}
	if openPaths[r.URL.Path] {
		return false
	}
	if strings.HasPrefix(r.URL.Path, "/debug/") {
		return true
	}
	return r.Method != http.MethodGet && r.Method != http.MethodHead
}

func allowed(r *http.Request, token string) bool {
	if token == "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		return err == nil && ip != nil && ip.IsLoopback()
	}
	got, ok := strings.CutPrefix(r.Header.Get(TokenHeader), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(token)) == 1
}
