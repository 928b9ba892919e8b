package reason_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/busmesh/busmesh/internal/reason"
)

func TestParseRoundTrip(t *testing.T) {
	for r := reason.None; r <= reason.Unknown; r++ {
		if got := reason.Parse(r.String()); got != r {
			t.Errorf("Parse(%q) = %v, want %v", r.String(), got, r)
		}
	}
	if got := reason.Parse("from-a-newer-sidecar"); got != reason.Unknown {
		t.Errorf("Parse(unknown name) = %v, want Unknown", got)
	}
}

func TestStatusAndCode(t *testing.T) {
	tests := []struct {
		r      reason.Reason
		status int
		code   codes.Code
	}{
		{reason.Timeout, 504, codes.DeadlineExceeded},
		{reason.NoHealthy, 503, codes.Unavailable},
		{reason.RequestTooLarge, 413, codes.ResourceExhausted},
		{reason.ProtocolMismatch, 502, codes.Unimplemented},
		{reason.Cancelled, 499, codes.Canceled},
		{reason.UpgradeUnsupported, 501, codes.Unimplemented},
		{reason.Reason(200), 502, codes.Unavailable},
	}
	for _, tt := range tests {
		if got := tt.r.HTTPStatus(); got != tt.status {
			t.Errorf("%v.HTTPStatus() = %d, want %d", tt.r, got, tt.status)
		}
		if got := tt.r.GRPCCode(); got != tt.code {
			t.Errorf("%v.GRPCCode() = %v, want %v", tt.r, got, tt.code)
		}
	}
}

func TestOf(t *testing.T) {
	err := fmt.Errorf("publish: %w", reason.Errorf(reason.BrokerUnavailable, "connection lost"))
	if got := reason.Of(err); got != reason.BrokerUnavailable {
		t.Errorf("Of(wrapped) = %v, want broker-unavailable", got)
	}
	if got := reason.Of(nil); got != reason.None {
		t.Errorf("Of(nil) = %v, want None", got)
	}
	if got := reason.Of(fmt.Errorf("plain")); got != reason.Unknown {
		t.Errorf("Of(plain) = %v, want Unknown", got)
	}
}
