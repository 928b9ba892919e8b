package discovery

import (
	"time"

	"github.com/busmesh/busmesh/internal/identity"
)

// tombstoneKeep is how long a registry remembers the last seq of an owner
// whose entry left (goodbye, expiry). A signed hello passes the checker
// while its timestamp is within identity.DefaultSkew of the receiver's
// clock, either side: sent by a clock running ahead, it can be replayed
// up to twice the skew after it was sent, and every hello of the owner
// was sent before it left. Without the tombstone, a replay finds no entry
// and no sequence to be older than, and brings the instance back.
const tombstoneKeep = 2 * identity.DefaultSkew

// tombKey names an owner's claim on one instance of a service.
type tombKey struct {
	service, instance string
	owner             owner
}

// tomb is what is kept of a departed owner: its last seq, and until when
// (on the registry's time line).
type tomb struct {
	seq   uint64
	until time.Duration
}

// buriedKey is a tombstone in order of burial.
type buriedKey struct {
	key   tombKey
	until time.Duration
}

// tombstones remember the owners whose entries left, for tombstoneKeep,
// so that a hello of theirs at or below the last seq heard is refused: a
// replay. A restarted instance speaks under a new incarnation, another
// owner, and is taken at once; one that only lost the broker for a
// lifetime comes back with a higher seq. At most max are kept: a flood
// of departures evicts the oldest, whose replay window is nearest its
// end. Not safe for concurrent use: the registry's mu guards it.
type tombstones struct {
	max   int
	kept  map[tombKey]tomb
	order []buriedKey // by burial, so by until: the oldest first
}

func newTombstones(max int) tombstones {
	return tombstones{max: max, kept: map[tombKey]tomb{}}
}

// bury remembers k's last seq at at. An owner without an incarnation (an
// adapter from before incarnations) or one that does not number its
// messages cannot tell a restart or a repeat from a replay: nothing is
// kept for it.
func (t *tombstones) bury(k tombKey, seq uint64, at time.Duration) {
	if k.owner.incarnation == "" || seq == 0 || t.max <= 0 {
		return
	}
	t.prune(at)
	// Every kept tombstone has its latest burial in order, so bounding
	// order bounds both, even for one owner buried again and again.
	for len(t.order) >= t.max {
		t.pop()
	}
	until := at + tombstoneKeep
	t.kept[k] = tomb{seq: seq, until: until}
	t.order = append(t.order, buriedKey{k, until})
}

// buried reports whether a hello of k with seq is a replay: k left
// after a message with a seq at least as high, less than tombstoneKeep
// before at.
func (t *tombstones) buried(k tombKey, seq uint64, at time.Duration) bool {
	if len(t.kept) == 0 {
		return false // the common case: no map lookup
	}
	b, ok := t.kept[k]
	return ok && at < b.until && seq <= b.seq
}

// prune forgets the tombstones whose time ended by at: they are the
// oldest, at the front.
func (t *tombstones) prune(at time.Duration) {
	for len(t.order) > 0 && t.order[0].until <= at {
		t.pop()
	}
}

// pop forgets the oldest tombstone, unless its owner was buried again
// since (a later entry in order).
func (t *tombstones) pop() {
	b := t.order[0]
	t.order[0] = buriedKey{} // let the names go
	t.order = t.order[1:]
	if k, ok := t.kept[b.key]; ok && k.until == b.until {
		delete(t.kept, b.key)
	}
}
