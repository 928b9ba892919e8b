package main

import (
	"testing"
	"time"
)

func TestHuman(t *testing.T) {
	for in, want := range map[time.Duration]string{
		0: "-", 850 * time.Microsecond: "850µs", 1500 * time.Nanosecond: "2µs",
		2345678 * time.Nanosecond: "2.35ms", 45678 * time.Microsecond: "45.7ms", 456789 * time.Microsecond: "457ms",
		1254 * time.Millisecond: "1.25s", 90 * time.Second: "1m30s",
	} {
		if got := human(in); got != want {
			t.Errorf("human(%v) = %q, want %q", in, got, want)
		}
	}
}
