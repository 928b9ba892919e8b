// Package reason is busmesh's one vocabulary of mesh errors: why the mesh,
// not the application, answered a call. Each Reason has its name (the
// X-Busmesh-Error value), its HTTP status and its gRPC code, defined once
// here for both sidecars. Errors cross the bus as data (the response
// envelope's error and detail fields) and become a status only at the
// ambassador's edge.
package reason

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
)

// Reason says why the mesh answered a call. The zero Reason is None: the
// application answered.
type Reason uint8

// The reasons.
const (
	None Reason = iota
	// NoRoute: the call names no service (Host, :authority or method).
	NoRoute
	// BadTimeout: X-Busmesh-Timeout is not a positive duration.
	BadTimeout
	// BadRequest: the request cannot be made as it is.
	BadRequest
	// RequestTooLarge: the request body is over max_body_bytes.
	RequestTooLarge
	// HeadersTooLarge: the request has more headers than the mesh carries,
	// or they do not fit a broker message.
	HeadersTooLarge
	// URITooLong: the request's path and query are over
	// envelope.MaxPathBytes.
	URITooLong
	// NoHealthy: discovery knows no healthy instance of the service.
	NoHealthy
	// NoResponders: the broker found no adapter subscribed.
	NoResponders
	// Overloaded: the instance cannot serve the call before its deadline.
	Overloaded
	// BrokerUnavailable: the request could not be published.
	BrokerUnavailable
	// Timeout: no answer before the deadline.
	Timeout
	// Cancelled: the caller went away; nobody is answered.
	Cancelled
	// AppUnreachable: the adapter could not reach its application.
	AppUnreachable
	// ResponseTooLarge: the application's answer is over max_body_bytes.
	ResponseTooLarge
	// ProtocolMismatch: an HTTP call to a gRPC application, or the other
	// way round.
	ProtocolMismatch
	// StreamFailed: a streamed body broke off between the sidecars.
	StreamFailed
	// Forbidden: the serving adapter's allow rules do not let the caller
	// make this call.
	Forbidden
	// UpgradeUnsupported: the request asks for an HTTP upgrade (or a
	// CONNECT tunnel) the mesh does not carry.
	UpgradeUnsupported
	// CircuitOpen: the circuit breaker stopped calls to a failing service
	// or instance for a while; try again after Retry-After.
	CircuitOpen
	// Unknown is a reason this version does not know, from a newer peer.
	Unknown
)

// StatusClientClosed is the status recorded for a call whose caller went
// away before the answer (nginx's 499); no client ever receives it.
const StatusClientClosed = 499

var table = [...]struct {
	name   string
	status int
	code   codes.Code
}{
	None:               {"", http.StatusOK, codes.OK},
	NoRoute:            {"no-route", http.StatusBadRequest, codes.Unimplemented},
	BadTimeout:         {"bad-timeout", http.StatusBadRequest, codes.InvalidArgument},
	BadRequest:         {"bad-request", http.StatusBadRequest, codes.InvalidArgument},
	RequestTooLarge:    {"request-too-large", http.StatusRequestEntityTooLarge, codes.ResourceExhausted},
	HeadersTooLarge:    {"headers-too-large", http.StatusRequestHeaderFieldsTooLarge, codes.ResourceExhausted},
	URITooLong:         {"uri-too-long", http.StatusRequestURITooLong, codes.InvalidArgument},
	NoHealthy:          {"no-healthy-instances", http.StatusServiceUnavailable, codes.Unavailable},
	NoResponders:       {"no-responders", http.StatusServiceUnavailable, codes.Unavailable},
	Overloaded:         {"overloaded", http.StatusServiceUnavailable, codes.ResourceExhausted},
	BrokerUnavailable:  {"broker-unavailable", http.StatusServiceUnavailable, codes.Unavailable},
	Timeout:            {"timeout", http.StatusGatewayTimeout, codes.DeadlineExceeded},
	Cancelled:          {"cancelled", StatusClientClosed, codes.Canceled},
	AppUnreachable:     {"app-unreachable", http.StatusBadGateway, codes.Unavailable},
	ResponseTooLarge:   {"response-too-large", http.StatusBadGateway, codes.ResourceExhausted},
	ProtocolMismatch:   {"protocol-mismatch", http.StatusBadGateway, codes.Unimplemented},
	StreamFailed:       {"stream-failed", http.StatusBadGateway, codes.Unavailable},
	Forbidden:          {"forbidden", http.StatusForbidden, codes.PermissionDenied},
	UpgradeUnsupported: {"upgrade-unsupported", http.StatusNotImplemented, codes.Unimplemented},
	CircuitOpen:        {"circuit-open", http.StatusServiceUnavailable, codes.Unavailable},
	Unknown:            {"unknown", http.StatusBadGateway, codes.Unavailable},
}

// String returns the reason's name, the X-Busmesh-Error value.
func (r Reason) String() string {
	if int(r) < len(table) {
		return table[r].name
	}
	return table[Unknown].name
}

// HTTPStatus is the status an HTTP caller gets for r.
func (r Reason) HTTPStatus() int {
	if int(r) < len(table) {
		return table[r].status
	}
	return table[Unknown].status
}

// GRPCCode is the code a gRPC caller gets for r.
func (r Reason) GRPCCode() codes.Code {
	if int(r) < len(table) {
		return table[r].code
	}
	return table[Unknown].code
}

// Parse returns the Reason named s: None for "", Unknown for a name this
// version does not know.
func Parse(s string) Reason {
	for i := range table {
		if table[i].name == s {
			return Reason(i)
		}
	}
	return Unknown
}

// Error is a call's failure on the mesh's side: its reason and a detail
// for people.
type Error struct {
	Reason Reason
	Detail string
	// RetryAfter, when set, tells the caller when to try again (the
	// Retry-After header, gRPC's grpc-retry-pushback-ms).
	RetryAfter time.Duration
}

// Errorf returns an Error with a formatted detail.
func Errorf(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Reason.String() + ": " + e.Detail }

// Of returns the reason of err: the Reason of an *Error in its chain, else
// None for nil and Unknown for any other error.
func Of(err error) Reason {
	if err == nil {
		return None
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Reason
	}
	return Unknown
}
