package identity

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"
)

// DefaultMaxReplayEntries bounds the ids a ReplayGuard holds. An id stays
// for up to four skew-long intervals, so with the default skew this is
// enough for about 15,000 envelopes a second, in some tens of megabytes.
const DefaultMaxReplayEntries = 1 << 21

// replayShards spreads ids over locks so that concurrent checks rarely
// meet (BenchmarkReplayGuardShards compares with one lock).
const replayShards = 16

// ReplayConfig configures a ReplayGuard. The zero value gives the defaults.
type ReplayConfig struct {
	// Skew is how far a timestamp may be from now, either way; DefaultSkew
	// if 0.
	Skew time.Duration
	// MaxEntries bounds the ids held; DefaultMaxReplayEntries if 0. When
	// it is reached, Check refuses with ErrReplayFull until old ids age out.
	MaxEntries int
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// ReplayGuard accepts each envelope once while its timestamp is fresh:
// timestamps further than the skew from now are refused (ErrStale), and so
// is a second envelope with the same sender, id and timestamp (ErrReplay).
// A replayed envelope cannot pass with a newer timestamp, since the
// timestamp is under its MAC.
//
// Ids are kept in sets by timestamp, one set per skew-long interval, in a
// ring of four: a set is emptied when its slot is needed for a new
// interval, by which time none of its timestamps is fresh any more. Memory
// is bounded by MaxEntries and does not grow with time. Ids are hashed to
// 64 bits with a per-guard random seed, so an outsider cannot aim for
// collisions; an accidental one refuses one envelope in about 2^64/n.
//
// A ReplayGuard is safe for concurrent use; Check takes one of 16 locks
// and allocates nothing.
type ReplayGuard struct {
	skew   int64 // nanoseconds, also the width of an interval
	now    func() time.Time
	seed   maphash.Seed
	shards []replayShard
}

type replayShard struct {
	mu      sync.Mutex
	buckets [4]replayBucket
	n, max  int
	_       [40]byte // keeps shards on separate cache lines
}

type replayBucket struct {
	interval int64 // timestamp / skew
	ids      map[uint64]struct{}
}

// NewReplayGuard makes a ReplayGuard.
func NewReplayGuard(cfg ReplayConfig) *ReplayGuard {
	return newReplayGuard(cfg, replayShards)
}

func newReplayGuard(cfg ReplayConfig, shards int) *ReplayGuard {
	if cfg.Skew <= 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = DefaultMaxReplayEntries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	g := &ReplayGuard{skew: int64(cfg.Skew), now: cfg.Now, seed: maphash.MakeSeed(), shards: make([]replayShard, shards)}
	for i := range g.shards {
		s := &g.shards[i]
		s.max = max(cfg.MaxEntries/shards, 1)
		for j := range s.buckets {
			s.buckets[j] = replayBucket{interval: -1, ids: make(map[uint64]struct{})}
		}
	}
	return g
}

// Check accepts the envelope with id from sender stamped ts (Unix
// nanoseconds) if ts is within the skew of now and the three were not
// accepted before. It returns ErrStale, ErrReplay or ErrReplayFull (not
// wrapped, so that refusing costs no allocation) otherwise.
func (g *ReplayGuard) Check(sender KeyID, id uint64, ts int64) error {
	now := g.now().UnixNano()
	if ts < now-g.skew || ts > now+g.skew || ts < 0 {
		return ErrStale
	}
	var buf [len(sender) + 16]byte
	copy(buf[:], sender[:])
	binary.LittleEndian.PutUint64(buf[len(sender):], id)
	binary.LittleEndian.PutUint64(buf[len(sender)+8:], uint64(ts))
	h := maphash.Bytes(g.seed, buf[:])
	s := &g.shards[(h>>32)%uint64(len(g.shards))]
	interval := ts / g.skew
	b := &s.buckets[interval&3]

	s.mu.Lock()
	defer s.mu.Unlock()
	if b.interval != interval {
		if b.interval > interval {
			// The slot holds a newer interval: ts is four intervals behind
			// an accepted one, so the clock went back; keep the newer ids.
			return ErrStale
		}
		s.n -= len(b.ids)
		clear(b.ids)
		b.interval = interval
	}
	if _, seen := b.ids[h]; seen {
		return ErrReplay
	}
	if s.n >= s.max {
		return ErrReplayFull
	}
	b.ids[h] = struct{}{}
	s.n++
	return nil
}
