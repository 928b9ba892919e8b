package discovery

import "time"

// wheelSlot is the width of one slot of the expiry wheel: an entry is
// forgotten at most this long after its lifetime ends.
const wheelSlot = 100 * time.Millisecond

// wheel is a timing wheel of entries by the end of their lifetime. Adding,
// moving and removing an entry cost O(1); a sweep costs the slots that
// passed plus the entries that expired, not the number of entries.
type wheel struct {
	slots []*entry // each the head of a doubly linked list
	swept int64    // the last slot swept, in wheelSlot units since the epoch
}

// newWheel returns a wheel for lifetimes up to maxTTL.
func newWheel(maxTTL time.Duration) wheel {
	return wheel{slots: make([]*entry, int(maxTTL/wheelSlot)+8)}
}

// slotOf is the slot in which an entry whose lifetime ends at deadline
// (since the epoch) expires: rounded up, so never early.
func slotOf(deadline time.Duration) int64 {
	return int64((deadline + wheelSlot - 1) / wheelSlot)
}

// add files e by e.deadline.
func (w *wheel) add(e *entry) {
	e.linked = true
	e.slot = max(slotOf(e.deadline), w.swept+1)
	head := &w.slots[e.slot%int64(len(w.slots))]
	e.prev, e.next = nil, *head
	if *head != nil {
		(*head).prev = e
	}
	*head = e
}

// remove takes e out of the wheel, if it is in.
func (w *wheel) remove(e *entry) {
	if !e.linked {
		return
	}
	e.linked = false
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		w.slots[e.slot%int64(len(w.slots))] = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	}
	e.prev, e.next = nil, nil
}

// move refiles e after its deadline changed.
func (w *wheel) move(e *entry) {
	if e.linked && slotOf(e.deadline) == e.slot {
		return
	}
	w.remove(e)
	w.add(e)
}

// expire takes out every entry whose lifetime ended by now (since the
// epoch) and passes it to gone.
func (w *wheel) expire(now time.Duration, gone func(*entry)) {
	last := int64(now / wheelSlot)
	from := w.swept + 1
	if n := int64(len(w.slots)); last-from >= n {
		from = last - n + 1 // every slot once
	}
	for i := from; i <= last; i++ {
		for e := w.slots[i%int64(len(w.slots))]; e != nil; {
			next := e.next
			if e.slot <= last {
				w.remove(e)
				gone(e)
			}
			e = next
		}
	}
	w.swept = max(w.swept, last)
}
