package adapter

import "golang.org/x/sys/unix"

// queued returns how many bytes wait in the connection's receive queue
// (SIOCINQ, also known as FIONREAD).
func (c *directConn) queued() (int, bool) {
	if c.raw == nil {
		return 0, false
	}
	var n int
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); cerr != nil || err != nil {
		return 0, false
	}
	return n, true
}
