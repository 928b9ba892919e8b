//go:build !linux

package adapter

// queued cannot tell here: a body not already read is taken as still
// coming.
func (c *directConn) queued() (int, bool) { return 0, false }
