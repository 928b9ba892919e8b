package telemetry_test

import (
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/telemetry"
)

func TestLatencyWindow(t *testing.T) {
	var w telemetry.LatencyWindow
	if got := w.TakeMedian(); got != 0 {
		t.Errorf("TakeMedian() of nothing = %v, want 0", got)
	}
	for range 60 {
		w.Observe(2 * time.Millisecond)
	}
	for range 40 {
		w.Observe(50 * time.Millisecond)
	}
	got := w.TakeMedian()
	if got < 1700*time.Microsecond || got > 2400*time.Microsecond {
		t.Errorf("TakeMedian() = %v, want about 2ms (within a bucket)", got)
	}
	if got := w.TakeMedian(); got != 0 {
		t.Errorf("second TakeMedian() = %v, want 0: a new window", got)
	}
}
