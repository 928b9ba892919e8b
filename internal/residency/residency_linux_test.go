package residency

import (
	"crypto/sha256"
	"os"
	"strconv"
	"strings"
	"testing"
)

// written is in the binary's writable data: a release must keep what the
// program wrote there.
var written = [4096]byte{1}

// TestReleaseStartPages: the executable's read-only pages leave the
// resident set (RssFile falls), what the program wrote stays, and the
// code and read-only data still work afterwards (a hash over a table
// computed before and after agrees).
func TestReleaseStartPages(t *testing.T) {
	written[100] = 42
	before := sha256.Sum256([]byte(strings.Repeat("busmesh", 1000)))
	fileBefore := rssFile(t)
	r, err := ReleaseStartPages()
	if err != nil {
		t.Fatal(err)
	}
	fileAfter := rssFile(t)
	t.Logf("released %d KiB of mappings; RssFile %d → %d KiB; VmRSS %d → %d KiB",
		r.Bytes>>10, fileBefore, fileAfter, r.RSSBefore>>10, r.RSSAfter>>10)
	if r.Bytes == 0 || r.RSSBefore == 0 || r.RSSAfter == 0 {
		t.Fatalf("released %+v, want the executable's read-only mappings and both RSS readings", r)
	}
	// Whatever runs after the release maps its pages again (and up to
	// 64 KiB around each), so only the drop in the release itself tells.
	if r.RSSAfter+256<<10 > r.RSSBefore {
		t.Errorf("VmRSS %d → %d KiB around the release, want it 256 KiB lower or more", r.RSSBefore>>10, r.RSSAfter>>10)
	}
	if written[0] != 1 || written[100] != 42 {
		t.Errorf("writable data changed by the release: %d, %d; want 1, 42", written[0], written[100])
	}
	if after := sha256.Sum256([]byte(strings.Repeat("busmesh", 1000))); after != before {
		t.Error("the same hash differs after the release")
	}
}

// rssFile is RssFile from /proc/self/status, in KiB.
func rssFile(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}
