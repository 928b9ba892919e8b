// Package sysmon keeps the Go runtime's system monitor (sysmon) from its
// deep sleep, which a sidecar's traffic pattern makes expensive.
//
// sysmon is the runtime's own thread that retakes processors from long
// system calls and preempts long-running goroutines. When every processor
// is idle it sleeps until woken, and the next goroutine to enter a system
// call wakes it: a futex, on that goroutine's path, and a thread woken on
// a machine whose CPUs the application and the broker need too. A sidecar
// at low load goes idle between the hops of every call and makes a system
// call on each, so it pays that wake-up about twice per call.
//
// The runtime skips the deep sleep while a scheduler trace is on. The
// longest trace period (schedtrace=2147483647, in milliseconds: 24.8 days)
// keeps sysmon on its idle pace instead: a wake-up every 10 ms, none
// caused by a call. The setting can only be made before the runtime
// starts, so Reexec restarts the process with it in GODEBUG.
//
// What else the setting does, all of it the runtime's: it prints one
// "SCHED" line on standard error when the machine's monotonic clock
// (its time since boot) passes 24.8 days, at start if it already has, and
// every 24.8 days after; and a crash (an unrecovered panic, a fatal error
// or signal) prints the scheduler's state (a line per processor, thread
// and goroutine) before the panic message and traceback.
package sysmon
