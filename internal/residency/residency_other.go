//go:build !linux

package residency

// ReleaseStartPages does nothing outside Linux.
func ReleaseStartPages() (Released, error) { return Released{}, nil }
