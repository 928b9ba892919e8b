package main

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// human writes a latency for people: three significant digits at most
// ("850µs", "2.34ms", "45.6ms", "1.25s"), "-" for none.
func human(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Round(time.Microsecond)/time.Microsecond)
	case d < time.Second:
		return trim(float64(d)/float64(time.Millisecond)) + "ms"
	case d < time.Minute:
		return trim(d.Seconds()) + "s"
	}
	return d.Round(time.Second).String()
}

// humanPB is human for an API duration; nil is none.
func humanPB(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return human(d.AsDuration())
}

// trim formats v with three significant digits, for 1 <= v < 1000.
func trim(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// rate writes requests per second for people.
func rate(r float64) string {
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return fmt.Sprintf("%.2f", r)
	case r < 100:
		return fmt.Sprintf("%.1f", r)
	}
	return fmt.Sprintf("%.0f", r)
}

// percent writes a share as a percentage, "-" without requests.
func percent(share float64, requests uint64) string {
	if requests == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*share)
}
