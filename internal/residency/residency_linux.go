package residency

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ReleaseStartPages drops the executable's read-only mappings (its code
// and read-only data) from the process's page tables with
// madvise(MADV_DONTNEED). For a clean private file mapping that only
// forgets the mapping: a later access maps the page again from the file
// (the page cache), and the content is the file's, as before. A mapping
// holding any page of its own (Anonymous in smaps) is left alone: that is
// a writable one (data, heap, stacks), or a read-only one written before
// it was made read-only (a dynamic linker's relocations, RELRO), where
// the file's content is not what the process holds.
func ReleaseStartPages() (Released, error) {
	var r Released
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return r, err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return r, err
	}
	spans, err := releasable(smaps, exe)
	if err != nil {
		return r, err
	}
	r.RSSBefore = residentBytes()
	for _, s := range spans {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, s.start, s.end-s.start, unix.MADV_DONTNEED); errno != 0 {
			return r, fmt.Errorf("residency: madvise %#x-%#x: %w", s.start, s.end, errno)
		}
		r.Bytes += uint64(s.end - s.start)
	}
	r.RSSAfter = residentBytes()
	return r, nil
}

// span is an address range [start, end).
type span struct{ start, end uintptr }

// releasable returns the mappings of exe in smaps (the text of
// /proc/self/smaps) that ReleaseStartPages may release: readable, not
// writable, and without a page of their own.
func releasable(smaps []byte, exe string) ([]span, error) {
	var spans []span
	var cur *span // the executable's read-only mapping being read, if any
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.ContainsAny(k, " -") {
			// A field of the mapping above: "Anonymous:   0 kB".
			if k == "Anonymous" && cur != nil {
				if strings.TrimSpace(v) == "0 kB" {
					spans = append(spans, *cur)
				}
				cur = nil
			}
			continue
		}
		// A mapping: address perms offset dev inode path.
		cur = nil
		f := strings.Fields(line)
		if len(f) != 6 || f[5] != exe || f[1][0] != 'r' || strings.ContainsRune(f[1], 'w') {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("residency: unreadable mapping %q in /proc/self/smaps", f[0])
		}
		cur = &span{uintptr(start), uintptr(end)}
	}
	return spans, sc.Err()
}

// residentBytes is VmRSS from /proc/self/statm (its second field, in
// pages); 0 when unreadable.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}
