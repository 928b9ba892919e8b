package residency

import (
	"crypto/sha256"
	"slices"
	"strings"
	"testing"
)

// written is in the binary's writable data: a release must keep what the
// program wrote there.
var written = [4096]byte{1}

// TestReleaseStartPages: the executable's read-only pages leave the
// resident set (VmRSS falls across the release), what the program wrote
// stays, and the code and read-only data still work afterwards (a hash
// computed before and after agrees).
func TestReleaseStartPages(t *testing.T) {
	written[100] = 42
	before := sha256.Sum256([]byte(strings.Repeat("busmesh", 1000)))
	r, err := ReleaseStartPages()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("released %d KiB of mappings; VmRSS %d → %d KiB", r.Bytes>>10, r.RSSBefore>>10, r.RSSAfter>>10)
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

// TestReleasable: of the executable's mappings, only readable, unwritable
// ones without a page of their own are released; a read-only mapping
// written before it was made read-only (RELRO: Anonymous pages), a
// writable one, another file's, and a deleted or oddly named executable's
// are not.
func TestReleasable(t *testing.T) {
	const smaps = `00400000-00542000 r-xp 00000000 fe:00 99 /bin/busmesh
Size:               1288 kB
Rss:                 960 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00542000-006b7000 r--p 00142000 fe:00 99 /bin/busmesh
Rss:                 320 kB
Anonymous:             0 kB
006b7000-006b9000 r--p 002b7000 fe:00 99 /bin/busmesh
Rss:                   8 kB
Anonymous:             8 kB
006b9000-006db000 rw-p 002b9000 fe:00 99 /bin/busmesh
Anonymous:           108 kB
006db000-006dc000 rw-p 00000000 00:00 0
Anonymous:             4 kB
7f0000000000-7f0000001000 r--p 00000000 fe:00 12 /usr/lib/libc.so.6
Anonymous:             0 kB
7f0000001000-7f0000002000 r-xp 00000000 fe:00 13 /bin/busmesh (deleted)
Anonymous:             0 kB
7f0000002000-7f0000003000 ---p 00000000 fe:00 99 /bin/busmesh
Anonymous:             0 kB
`
	got, err := releasable([]byte(smaps), "/bin/busmesh")
	if err != nil {
		t.Fatal(err)
	}
	want := []span{{0x400000, 0x542000}, {0x542000, 0x6b7000}}
	if !slices.Equal(got, want) {
		t.Errorf("releasable = %#x, want %#x", got, want)
	}
	if _, err := releasable([]byte("zz-00400000 r-xp 00000000 fe:00 99 /bin/busmesh\nAnonymous: 0 kB\n"), "/bin/busmesh"); err == nil {
		t.Error("an unreadable address range was not refused")
	}
}
