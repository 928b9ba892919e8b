// Package testutil holds small helpers that the tests of several packages
// share.
package testutil

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a process's output or a logger may write
// while a test reads it.
type Buffer struct {
	// Keep, when set, bounds the buffer to its last Keep to 2 × Keep bytes
	// (a long test's debug log, read only for its tail); 0 keeps all.
	Keep int

	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.b.Write(p)
	if b.Keep > 0 && b.b.Len() > 2*b.Keep {
		tail := b.b.Bytes()[b.b.Len()-b.Keep:]
		b.b.Truncate(copy(b.b.Bytes(), tail))
	}
	return n, err
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tail returns the last n bytes written, or all of them when fewer.
func (b *Buffer) Tail(n int) string {
	s := b.String()
	return s[max(0, len(s)-n):]
}
