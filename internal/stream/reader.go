package stream

import (
	"context"
	"fmt"
	"io"
)

// Reader reads a stream's data as a byte stream, granting the sender
// credit as it goes: a consumer that stops reading stops the sender after a
// window's worth.
type Reader struct {
	ctx   context.Context
	in    *Inbound
	grant func(n int64) error
	rest  []byte
}

// NewReader returns a Reader of in; grant sends a window update to the
// sender. A grant that cannot be sent fails the read: the sender would
// stall without it.
func NewReader(ctx context.Context, in *Inbound, grant func(n int64) error) *Reader {
	return &Reader{ctx: ctx, in: in, grant: grant}
}

// Read implements io.Reader; it returns io.EOF after the end frame.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		chunk, grant, err := r.in.Next(r.ctx)
		if grant > 0 {
			if gerr := r.grant(grant); gerr != nil {
				return 0, fmt.Errorf("window update: %w", gerr)
			}
		}
		if err != nil {
			return 0, err
		}
		r.rest = chunk.Data
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// WriteTo implements io.WriterTo: each frame's data goes to w as it came,
// with no buffer between (io.Copy would allocate 32 KiB for every stream,
// held as long as the stream lives).
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.rest) > 0 {
			n, err := w.Write(r.rest)
			total += int64(n)
			r.rest = r.rest[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		chunk, grant, err := r.in.Next(r.ctx)
		if grant > 0 {
			if gerr := r.grant(grant); gerr != nil {
				return total, fmt.Errorf("window update: %w", gerr)
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		r.rest = chunk.Data
	}
}

var (
	_ io.Reader   = (*Reader)(nil)
	_ io.WriterTo = (*Reader)(nil)
)
