// Package residency keeps a long-running sidecar's resident set to what it
// uses.
//
// A Go binary's start touches far more of its own code and read-only data
// than its steady state does: every package's init, flag and config
// parsing, each backend's set-up. The kernel maps those pages, and up to
// 64 KiB around each (fault-around), and they stay counted in the
// process's resident set for its whole life. ReleaseStartPages drops
// them from the process's page tables once the sidecar is ready: they
// stay in the page cache (until memory pressure evicts them, as any
// unmapped file page), shared with every other process running the same
// file, and the ones the sidecar uses again come back on their first use
// through a minor fault.
package residency

// Released says what ReleaseStartPages did.
type Released struct {
	// Bytes is the size of the read-only mappings of the executable it
	// released (resident or not).
	Bytes uint64
	// RSSBefore and RSSAfter are the process's resident set, in bytes,
	// around the release (VmRSS).
	RSSBefore, RSSAfter uint64
}
