//go:build !linux

package sysmon

// Reexec does nothing where the setting was not measured (see the package
// doc): it is Linux's.
func Reexec() error { return nil }
