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
// madvise(MADV_DONTNEED). For a private file mapping that only forgets
// the mapping: a later access maps the page again from the file (the page
// cache), and the content is the file's, as before. Writable mappings
// (data, heap, stacks) are left alone: there it would lose what was
// written.
func ReleaseStartPages() (Released, error) {
	var r Released
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return r, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return r, err
	}
	r.RSSBefore = residentBytes()
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// address perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[5] != exe || strings.ContainsRune(f[1], 'w') || f[1][0] != 'r' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			return r, fmt.Errorf("residency: unreadable mapping %q in /proc/self/maps", f[0])
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
			return r, fmt.Errorf("residency: madvise %s %s: %w", f[0], f[1], errno)
		}
		r.Bytes += end - start
	}
	r.RSSAfter = residentBytes()
	return r, sc.Err()
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
