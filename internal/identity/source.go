package identity

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busmesh/busmesh/internal/telemetry"
)

// DefaultGrace is how long a rotated-out identity still receives:
// envelopes addressed to it are in flight, and peers learn the new
// certificate only from its next announcement.
const DefaultGrace = 5 * time.Minute

// defaultInterval is how often a Source looks at its files.
const defaultInterval = time.Second

// SourceConfig configures a Source.
type SourceConfig struct {
	// CertFile, KeyFile and CAFile are the files Load reads.
	CertFile, KeyFile, CAFile string
	// Interval is how often the files are checked for a change; 1s if 0.
	Interval time.Duration
	// Grace is how long the previous identity still receives after a
	// rotation; DefaultGrace if 0.
	Grace time.Duration
	// Logger gets rotations and failed reloads; nil discards.
	Logger *slog.Logger
}

// Source holds a sidecar's current identity and follows its files: Run
// reloads them when they change (polling size and modification time), and
// a rotation keeps the previous identity for the grace period so that
// envelopes addressed to it still verify. A new certificate or key that
// does not load (half-written, mismatched, expired, another CA) is logged
// and the current identity stays. A change is loaded only once the files
// have stayed the same for one interval, so a rotation that writes two
// files is seen whole. Run also warns, once per certificate, when it enters
// the last fifth of its lifetime unreplaced. Current and Local are safe
// for concurrent use and cost an atomic load.
type Source struct {
	cfg SourceConfig
	log *slog.Logger

	cur  atomic.Pointer[Identity]
	prev atomic.Pointer[retired]

	mu      sync.Mutex // serialises reloads and guards the fields below
	seen    filesState // the files as last loaded or tried
	pending filesState // a change seen once, waiting to settle
	warned  KeyID      // the identity last warned about as expiring
}

// expiringShare is the last part of a certificate's lifetime in which Run
// warns that nothing has replaced it yet.
const expiringShare = 5 // the last fifth

// retired is a rotated-out identity and when it stops receiving.
type retired struct {
	id    *Identity
	until time.Time
}

// fileState is what a poll compares: a file's size and modification time,
// or that it could not be read.
type fileState struct {
	mod, size int64
	missing   bool
}

type filesState [3]fileState

// NewSource loads the identity in cfg's files; Run follows them from then
// on.
func NewSource(cfg SourceConfig) (*Source, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.Grace <= 0 {
		cfg.Grace = DefaultGrace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, log: log}
	s.seen = s.stat()
	id, err := Load(cfg.CertFile, cfg.KeyFile, cfg.CAFile)
	if err != nil {
		return nil, err
	}
	s.cur.Store(id)
	return s, nil
}

// Current is the identity to send with. The Identity stays usable after a
// rotation; it is only no longer current.
func (s *Source) Current() *Identity { return s.cur.Load() }

// Local returns the identity whose KeyID is id, for an envelope addressed
// to it: the current one, or the previous one during its grace period.
// Otherwise the error wraps ErrUnknownKey.
func (s *Source) Local(id KeyID) (*Identity, error) {
	if c := s.cur.Load(); c.keyID == id {
		return c, nil
	}
	if p := s.prev.Load(); p != nil && p.id.keyID == id && time.Now().Before(p.until) {
		return p.id, nil
	}
	return nil, fmt.Errorf("local identity %s: %w", id, ErrUnknownKey)
}

// Run checks the files every interval and reloads them when they have
// changed and settled, until ctx is done. The caller owns the goroutine
// that runs it.
func (s *Source) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.poll()
		}
	}
}

func (s *Source) poll() {
	st := s.stat()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.warnExpiringLocked(time.Now())
	if st == s.seen {
		return
	}
	if st != s.pending {
		s.pending = st // wait one interval for the writer to finish
		return
	}
	s.seen = st
	if err := s.reloadLocked(); err != nil {
		s.log.Warn("identity reload failed, keeping the current one", telemetry.KeyErr, err)
	}
}

// Reload loads the files now, whether or not they changed (on SIGHUP, say).
// On error the current identity stays.
func (s *Source) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = s.stat()
	return s.reloadLocked()
}

func (s *Source) reloadLocked() error {
	files, err := readFiles(s.cfg.CertFile, s.cfg.KeyFile, s.cfg.CAFile)
	if err != nil {
		return err
	}
	old := s.cur.Load()
	id, err := New(files[0], files[1], files[2], old.peers)
	if err != nil {
		return fmt.Errorf("load identity from %s: %w", s.cfg.CertFile, err)
	}
	if id.keyID == old.keyID {
		return nil
	}
	s.prev.Store(&retired{id: old, until: time.Now().Add(s.cfg.Grace)})
	s.cur.Store(id)
	s.log.Info("identity rotated", telemetry.KeyService, id.service,
		"key_id", id.keyID.String(), "previous_key_id", old.keyID.String(),
		"not_after", id.cert.NotAfter, "grace", s.cfg.Grace)
	return nil
}

func (s *Source) stat() filesState {
	var st filesState
	for i, f := range []string{s.cfg.CertFile, s.cfg.KeyFile, s.cfg.CAFile} {
		fi, err := os.Stat(f)
		if err != nil {
			st[i].missing = true
			continue
		}
		st[i] = fileState{mod: fi.ModTime().UnixNano(), size: fi.Size()}
	}
	return st
}

// warnExpiringLocked warns once per certificate when it enters the last
// fifth of its lifetime with no new one in its files: rotation is late.
func (s *Source) warnExpiringLocked(now time.Time) {
	id := s.cur.Load()
	c := id.cert
	if id.keyID == s.warned || now.Before(c.NotAfter.Add(-c.NotAfter.Sub(c.NotBefore)/expiringShare)) {
		return
	}
	s.warned = id.keyID
	s.log.Warn("identity certificate expiring, not rotated yet", telemetry.KeyService, id.service,
		"key_id", id.keyID.String(), "not_after", c.NotAfter, "file", s.cfg.CertFile)
}
