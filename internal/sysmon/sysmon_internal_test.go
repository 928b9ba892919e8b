package sysmon

import "testing"

func TestWithSetting(t *testing.T) {
	for _, c := range []struct {
		godebug, want string
		restart       bool
	}{
		{"", Setting, true},
		{"http2client=0", "http2client=0," + Setting, true},
		{"madvdontneed=0,panicnil=1", "madvdontneed=0,panicnil=1," + Setting, true},
		{"schedtrace=0", "", false},
		{"http2client=0,schedtrace=1000", "", false},
		{Setting, "", false},
		{"scheddetail=1", "", false},
		{"schedtracex=1", "schedtracex=1," + Setting, true},
		// The runtime does not trim keys: " schedtrace" is not one of its.
		{" schedtrace=0", " schedtrace=0," + Setting, true},
	} {
		got, restart := withSetting(c.godebug)
		if got != c.want || restart != c.restart {
			t.Errorf("withSetting(%q) = %q, %v; want %q, %v", c.godebug, got, restart, c.want, c.restart)
		}
	}
}
