package main

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// adminError is a failed Admin API call said for people: which sidecar,
// which address, what happened, what to try.
type adminError struct {
	what string // the verb's action: "list services"
	addr string // --admin
	msg  string
	fix  string
}

func (e *adminError) Error() string {
	s := fmt.Sprintf("%s: %s", e.what, e.msg)
	if e.fix != "" {
		s += "\n  try: " + e.fix
	}
	return s
}

// humanize turns a gRPC error from the admin API at addr into an
// adminError; other errors pass through.
func humanize(what, addr string, timeoutFlag string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s at %s: %w", what, addr, err)
	}
	e := &adminError{what: what, addr: addr}
	switch st.Code() {
	case codes.Unavailable:
		e.msg = fmt.Sprintf("no busmesh admin API answers at %s (%s)", addr, dialReason(st.Message()))
		e.fix = "start a sidecar (busmesh dev listens on 127.0.0.1:15000; a sidecar on its config's admin: address), " +
			"or point at one with --admin HOST:PORT"
	case codes.DeadlineExceeded:
		e.msg = fmt.Sprintf("the sidecar at %s did not answer within %s", addr, timeoutFlag)
		e.fix = "a larger --timeout, or check the sidecar's log: is it stuck or overloaded?"
	case codes.Unimplemented:
		e.msg = fmt.Sprintf("%s answers gRPC, but not the busmesh Admin API (%s)", addr, st.Message())
		e.fix = "--admin must name a busmesh sidecar's admin: address, not one of its data ports"
	case codes.FailedPrecondition:
		e.msg = fmt.Sprintf("the sidecar at %s %s", addr, st.Message())
		e.fix = "use the admin address of a sidecar with an ambassador section (the one your application calls)"
	case codes.InvalidArgument:
		e.msg = st.Message()
	case codes.Unauthenticated:
		e.msg = fmt.Sprintf("the sidecar at %s refused: %s", addr, st.Message())
		e.fix = "set BUSMESH_ADMIN_TOKEN to the sidecar's admin token, or run on the sidecar's host (loopback needs none when no token is set)"
	case codes.Aborted:
		e.msg = st.Message()
		e.fix = "read the table again (busmesh routes) and retry with its version"
	default:
		e.msg = fmt.Sprintf("the sidecar at %s answered %s: %s", addr, st.Code(), st.Message())
	}
	return e
}

// dialReason keeps the part of a gRPC connection error a person needs:
// "connection refused", "i/o timeout", "no such host".
func dialReason(msg string) string {
	for _, r := range []string{"connection refused", "i/o timeout", "no such host", "connection reset by peer", "network is unreachable"} {
		if strings.Contains(msg, r) {
			return r
		}
	}
	if strings.Contains(msg, "http2") || strings.Contains(msg, "frame") || strings.Contains(msg, "EOF") {
		return "something listens there, but it does not speak HTTP/2 gRPC"
	}
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		return strings.Trim(msg[i+2:], `"`)
	}
	return msg
}
