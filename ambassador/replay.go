package ambassador

import (
	"context"

	"github.com/busmesh/busmesh/internal/stream"
)

// replayBody is a call's Body that can be sent again, for a retry: it
// keeps the part that travelled in the request envelope, and what its
// source streamed after, while that fits a bounded buffer (retry's
// replay_bytes, 64 KiB by default, as Linkerd's). A body that streamed
// more, or whose stream was cut off by the failed attempt, cannot be
// replayed: the call is not retried.
type replayBody struct {
	inner Body
	limit int
	chunk int

	first     []byte
	more      bool
	firstRead bool

	rest     restState
	kept     []byte // what the first Rest sent, while it fits limit
	ended    bool   // the first Rest sent the body's end
	overflow bool
}

type restState uint8

const (
	restNotStarted restState = iota
	restStarted
	restDone
)

// wrap makes r the replayable body of inner.
func (r *replayBody) wrap(inner Body, limit, chunk int) {
	*r = replayBody{inner: inner, limit: limit, chunk: chunk}
}

// First returns the first part of the body: read from the source the
// first time, the same bytes on every attempt after. The header room is
// the same on every attempt, so the split is too.
func (r *replayBody) First(room int) ([]byte, bool, error) {
	if r.firstRead {
		return r.first, r.more, nil
	}
	data, more, err := r.inner.First(room)
	if err != nil {
		return nil, false, err
	}
	r.first, r.more, r.firstRead = data, more, true
	return data, more, nil
}

// Rest streams the rest: from the source on the first attempt that gets
// this far (keeping a copy), from the copy on later ones.
func (r *replayBody) Rest(ctx context.Context, s *stream.Sender) error {
	if r.rest == restDone && r.replayable() {
		if len(r.kept) > 0 {
			if err := s.SendChunked(ctx, r.kept, r.chunk); err != nil {
				return err
			}
		}
		return s.Send(ctx, nil, true, nil)
	}
	r.rest = restStarted
	s.Tap = r.keep
	err := r.inner.Rest(ctx, s)
	if err == nil {
		r.rest = restDone
	}
	return err
}

func (r *replayBody) keep(data []byte, end bool) {
	if r.overflow {
		return
	}
	if len(r.kept)+len(data) > r.limit {
		r.overflow, r.kept = true, nil
		return
	}
	r.kept = append(r.kept, data...)
	r.ended = r.ended || end
}

// replayable reports whether the body can be sent again in whole. It may
// only be called while no attempt streams it.
func (r *replayBody) replayable() bool {
	switch r.rest {
	case restNotStarted:
		return true // nothing was taken from the source after First
	case restDone:
		return r.ended && !r.overflow
	}
	return false
}
