package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
)

// NewLogger returns a log/slog logger writing to w. level is debug, info,
// warn or error; format is json or text.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", format)
}

// Limiter lets through one event per interval and counts the rest, so that
// a flood of bad input is logged, not written to disk a million times.
type Limiter struct {
	Interval   time.Duration
	next       atomic.Int64 // unix nanoseconds
	suppressed atomic.Int64
}

// Allow reports whether to log now, and how many events were suppressed
// since the last one logged.
func (l *Limiter) Allow() (ok bool, suppressed int64) {
	now := time.Now().UnixNano()
	next := l.next.Load()
	if now < next || !l.next.CompareAndSwap(next, now+int64(l.Interval)) {
		l.suppressed.Add(1)
		return false, 0
	}
	return true, l.suppressed.Swap(0)
}

// OrDiscard returns l, or a logger that discards everything when l is nil:
// constructors take a nil logger to mean silence.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
