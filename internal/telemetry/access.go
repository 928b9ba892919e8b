package telemetry

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"time"
)

// AccessLog writes one JSON line per call (a sample of them), through
// log/slog, whatever the sidecar's log level. A nil *AccessLog is off.
type AccessLog struct {
	logger *slog.Logger
	sample float64
}

// NewAccessLog returns an access log writing JSON lines to w, of the share
// sample (0 to 1) of calls.
func NewAccessLog(w io.Writer, sample float64) *AccessLog {
	return &AccessLog{logger: slog.New(slog.NewJSONHandler(w, nil)), sample: sample}
}

// Sampled reports whether to log the call at hand.
func (l *AccessLog) Sampled() bool {
	return l.sample >= 1 || (l.sample > 0 && rand.Float64() < l.sample)
}

// Access is one call, as an access log line tells it.
type Access struct {
	Side     string // ambassador or adapter
	TraceID  string
	Caller   string
	Service  string
	Instance string
	Protocol string
	Method   string // HTTP method, or the gRPC method (/pkg.Service/Method)
	Path     string // HTTP only
	Status   int    // HTTP status; for gRPC, GRPCCode says how it ended
	GRPCCode string
	Duration time.Duration
	BytesIn  int64
	BytesOut int64
	Broker   string
	Reason   string // the mesh's reason, when the mesh answered
}

// Access log keys beyond the shared ones.
const (
	KeyTraceID  = "trace_id"
	KeyCaller   = "caller"
	KeyProtocol = "protocol"
	KeyGRPCCode = "grpc_code"
	KeyBytesIn  = "bytes_in"
	KeyBytesOut = "bytes_out"
	KeySide     = "side"
)

// Log writes a's line.
func (l *AccessLog) Log(a *Access) {
	attrs := []slog.Attr{
		slog.String(KeySide, a.Side),
		slog.String(KeyTraceID, a.TraceID),
		slog.String(KeyCaller, a.Caller),
		slog.String(KeyService, a.Service),
		slog.String(KeyInstance, a.Instance),
		slog.String(KeyProtocol, a.Protocol),
		slog.String(KeyMethod, a.Method),
	}
	if a.Protocol == ProtocolGRPC {
		attrs = append(attrs, slog.String(KeyGRPCCode, a.GRPCCode))
	} else {
		attrs = append(attrs, slog.String(KeyPath, a.Path), slog.Int(KeyStatus, a.Status))
	}
	attrs = append(attrs,
		slog.Float64(KeyDuration, a.Duration.Seconds()),
		slog.Int64(KeyBytesIn, a.BytesIn),
		slog.Int64(KeyBytesOut, a.BytesOut),
		slog.String(KeyBroker, a.Broker),
		slog.String(KeyReason, a.Reason),
	)
	l.logger.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}

// TraceID returns the trace id of a W3C traceparent
// ("00-<trace id>-<span id>-<flags>"), "" if it has none.
func TraceID(traceparent string) string {
	if len(traceparent) < 35 || traceparent[2] != '-' {
		return ""
	}
	return traceparent[3:35]
}
