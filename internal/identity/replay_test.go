package identity_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time           { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration)      { c.ns.Add(int64(d)) }
func (c *fakeClock) At(d time.Duration) int64 { return c.ns.Load() + int64(d) }

func TestReplayGuard(t *testing.T) {
	clock := newFakeClock()
	g := identity.NewReplayGuard(identity.ReplayConfig{Now: clock.Now})
	a, b := identity.KeyID{1}, identity.KeyID{2}
	skew := identity.DefaultSkew
	ts := clock.At(0)

	steps := []struct {
		name    string
		sender  identity.KeyID
		id      uint64
		ts      int64
		wantErr error
	}{
		{"first", a, 1, ts, nil},
		{"replay", a, 1, ts, identity.ErrReplay},
		{"same id, new timestamp (a retry)", a, 1, ts + 1, nil},
		{"same id and timestamp, another sender", b, 1, ts, nil},
		{"another id", a, 2, ts, nil},
		{"stale", a, 3, clock.At(-skew - time.Nanosecond), identity.ErrStale},
		{"oldest fresh", a, 4, clock.At(-skew), nil},
		{"from the future", a, 5, clock.At(skew + time.Nanosecond), identity.ErrStale},
		{"newest fresh", a, 6, clock.At(skew), nil},
		{"replay of the oldest", a, 4, clock.At(-skew), identity.ErrReplay},
		{"replay of the newest", a, 6, clock.At(skew), identity.ErrReplay},
		{"negative timestamp", a, 7, -1, identity.ErrStale},
	}
	for _, s := range steps {
		if err := g.Check(s.sender, s.id, s.ts); !errors.Is(err, s.wantErr) {
			t.Errorf("%s: Check() = %v, want %v", s.name, err, s.wantErr)
		}
	}
	// Once stale, a replay is refused as stale rather than remembered.
	clock.Add(skew + time.Second)
	if err := g.Check(a, 1, ts); !errors.Is(err, identity.ErrStale) {
		t.Errorf("replay after the window: Check() = %v, want ErrStale", err)
	}
}

func TestReplayGuardForgetsOldIDs(t *testing.T) {
	clock := newFakeClock()
	const maxEntries = 1600 // 100 per shard
	g := identity.NewReplayGuard(identity.ReplayConfig{Now: clock.Now, MaxEntries: maxEntries, Skew: time.Second})
	var id uint64
	// 40 windows of 200 ids: 8,000 ids in all, five times the bound, are
	// accepted because each window's ids are dropped once stale.
	for w := range 40 {
		for range 200 {
			id++
			if err := g.Check(identity.KeyID{}, id, clock.At(0)); err != nil {
				t.Fatalf("window %d, id %d: Check() = %v", w, id, err)
			}
			clock.Add(5 * time.Millisecond)
		}
	}
}

func TestReplayGuardFull(t *testing.T) {
	clock := newFakeClock()
	g := identity.NewReplayGuard(identity.ReplayConfig{Now: clock.Now, MaxEntries: 16})
	full := 0
	for id := range uint64(200) {
		err := g.Check(identity.KeyID{}, id, clock.At(0))
		switch {
		case errors.Is(err, identity.ErrReplayFull):
			full++
		case err != nil:
			t.Fatalf("Check(%d) = %v", id, err)
		}
	}
	if full < 200-16 {
		t.Errorf("%d of 200 ids refused with a bound of 16, want at least %d", full, 200-16)
	}
}

func TestReplayGuardConcurrent(t *testing.T) {
	g := identity.NewReplayGuard(identity.ReplayConfig{})
	ts := time.Now().UnixNano()
	const goroutines, ids = 8, 500
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for id := range uint64(ids) {
				if g.Check(identity.KeyID{9}, id, ts) == nil {
					accepted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := accepted.Load(); got != ids {
		t.Errorf("%d goroutines checking the same %d ids: %d accepted, want %d", goroutines, ids, got, ids)
	}
}
