// Package sysmon keeps the Go runtime's system monitor (sysmon) from its
// deep sleep, which a sidecar's traffic pattern makes expensive.
//
// sysmon is the runtime's own thread that retakes processors from long
// system calls and preempts long-running goroutines. When every processor
// is idle it sleeps until woken, and the next goroutine to enter a system
// call wakes it (a futex, on that goroutine's path); woken that way, it
// polls every 20 µs for a millisecond or more before it sleeps deeply
// again. A sidecar at low load goes idle between the hops of every call
// and makes a system call on each, so it pays the wake-up on the call's
// path and the polling on the machine's CPUs, both twice per call.
//
// The runtime skips the deep sleep while a scheduler trace is on. The
// longest trace period (schedtrace=2147483647, in milliseconds: 24.8 days)
// keeps sysmon on its idle pace instead: a wake-up every 10 ms, none
// caused by a call. The setting can only be made before the runtime
// starts, so Reexec restarts the process with it in GODEBUG. The trace's
// only output is one line on standard error when the host has been up for
// longer than the period, at start and every 24.8 days after.
package sysmon

import "strings"

// Setting is the GODEBUG setting Reexec adds.
const Setting = "schedtrace=2147483647"

// settingKey is the name Setting sets.
const settingKey = "schedtrace"

// withSetting returns the GODEBUG value to restart with, and false when
// godebug (the current value) names schedtrace already: the user's
// choice, GODEBUG=schedtrace=0 keeps the runtime's default.
func withSetting(godebug string) (string, bool) {
	for field := range strings.SplitSeq(godebug, ",") {
		if key, _, _ := strings.Cut(field, "="); strings.TrimSpace(key) == settingKey {
			return "", false
		}
	}
	if godebug == "" {
		return Setting, true
	}
	return godebug + "," + Setting, true
}
