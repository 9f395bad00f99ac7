package pilot

import (
	"sync/atomic"
	"time"
)

// The adaptive prefetch: beyond its free slots, a module leases as many
// tasks as its slots run in prefetchWindow, at least one per slot (the
// default for tasks of a second or more: a pilot holds little that another
// could run) and at most maxPrefetch. Short tasks thus come in batches
// large enough to keep the slots busy during a lease round trip and to
// amortise the broker's per-request cost (end to end, /bin/true tasks on 2
// pilots × 4 slots: 1,850 tasks/s with one task per slot ahead, 2,300 with
// 16), while the queue a pilot holds never lasts much longer than the
// window, which bounds the imbalance between pilots at the end of a run.
const prefetchWindow = 20 * time.Millisecond

// maxPrefetch bounds the adaptive prefetch of a module with slots slots.
func maxPrefetch(slots int) int { return min(256, 32*slots) }

// prefetch is how many tasks m leases ahead of its free slots.
func (m *module) prefetch() int {
	per := m.slotTime.mean()
	if per <= 0 {
		return m.slots // nothing learned yet
	}
	n := int((time.Duration(m.slots)*prefetchWindow + per - 1) / per)
	return max(m.slots, min(n, maxPrefetch(m.slots)))
}

// slotTime is a moving average (weight 1/8 for the newest) of the time a
// slot spends on one task, from taking it off the queue to being free
// again: the program and the pilot's work around it.
type slotTime struct{ ns atomic.Int64 }

func (s *slotTime) add(d time.Duration) {
	d = max(d, time.Microsecond)
	for {
		old := s.ns.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/8
		}
		if s.ns.CompareAndSwap(old, next) {
			return
		}
	}
}

func (s *slotTime) mean() time.Duration { return time.Duration(s.ns.Load()) }
