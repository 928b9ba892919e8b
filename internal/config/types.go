package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string: "30s",
// "150ms", "1m30s".
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("is not a duration (example: \"30s\")")
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Timeout is a Duration that may also be "none": no limit at all. The
// zero Timeout is unset (a default applies).
type Timeout time.Duration

// NoTimeout is the Timeout written "none".
const NoTimeout = Timeout(-1)

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Timeout) UnmarshalText(b []byte) error {
	if strings.TrimSpace(string(b)) == "none" {
		*t = NoTimeout
		return nil
	}
	v, err := time.ParseDuration(string(b))
	if err != nil || v <= 0 {
		return fmt.Errorf("is not a positive duration or \"none\" (example: \"10m\")")
	}
	*t = Timeout(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (t Timeout) MarshalText() ([]byte, error) {
	if t == NoTimeout {
		return []byte("none"), nil
	}
	return []byte(time.Duration(t).String()), nil
}

// D returns t as a time.Duration: 0 for none.
func (t Timeout) D() time.Duration {
	if t == NoTimeout {
		return 0
	}
	return time.Duration(t)
}

// ByteSize is a number of bytes, written as an integer or with a unit:
// 4194304, "4MiB", "512KiB", "1GB".
type ByteSize int64

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest suffixes first, so "KiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *ByteSize) UnmarshalText(b []byte) error {
	text := strings.TrimSpace(string(b))
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(text, u.suffix) {
			text, mult = strings.TrimSpace(strings.TrimSuffix(text, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("is not a size (example: 4194304 or \"4MiB\")")
	}
	*s = ByteSize(n * mult)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s ByteSize) MarshalText() ([]byte, error) {
	for _, u := range byteUnits[:3] {
		if m := int64(s); m >= u.mult && m%u.mult == 0 && m/u.mult < 1024 {
			return []byte(strconv.FormatInt(m/u.mult, 10) + u.suffix), nil
		}
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}
