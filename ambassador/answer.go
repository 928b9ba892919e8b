package ambassador

import (
	"context"
	"io"

	"github.com/busmesh/busmesh/internal/stream"
)

// answerStream reads the rest of an answer that comes in frames, granting
// the serving adapter credit for what the caller has taken: a caller that
// stops reading stops the adapter after a window's worth.
type answerStream struct {
	a    *Ambassador
	c    *Call
	in   *stream.Inbound
	peer string
	owed int64 // credit for data handed out, granted at the next read
}

// answerFrames returns the stream of c's answer frames.
func (a *Ambassador) answerFrames(c *Call) *answerStream {
	in, peer := c.p.frames()
	return &answerStream{a: a, c: c, in: in, peer: peer}
}

// next returns the next piece of the answer's body; io.EOF after the last.
func (s *answerStream) next(ctx context.Context) ([]byte, error) {
	if s.owed > 0 && s.peer != "" {
		// Without its grant the adapter would stall: a grant that cannot
		// be sent fails the stream now.
		if err := stream.Grant(ctx, s.c.lane.pub, s.peer, s.c.Req.ID, s.a.sidecar, s.owed); err != nil {
			s.a.publishFailed("frame", s.peer, err)
			return nil, err
		}
		s.owed = 0
	}
	chunk, grant, err := s.in.Next(ctx)
	s.owed += grant
	s.c.bytesOut += int64(len(chunk.Data))
	return chunk.Data, err
}

// Read implements io.Reader over the answer's body.
func (s *answerStream) reader(ctx context.Context) io.Reader {
	return stream.NewReader(ctx, s.in, func(n int64) error {
		s.c.bytesOut += n
		err := stream.Grant(ctx, s.c.lane.pub, s.peer, s.c.Req.ID, s.a.sidecar, n)
		if err != nil && ctx.Err() == nil {
			s.a.publishFailed("frame", s.peer, err)
		}
		return err
	})
}
