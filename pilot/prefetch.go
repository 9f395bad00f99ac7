package pilot

import (
	"sync/atomic"
	"time"
)

// The adaptive prefetch: beyond its free slots, a module leases as many
// tasks as its slots run in prefetchWindow, at least one per slot (the
// default for tasks of a second or more: a pilot holds little that another
// could run) and at most maxPrefetch. While tasks are queued it asks for
// more only once half of that is used (leaseRequest's low-water mark).
// Short tasks thus come in batches large enough to keep the slots busy
// during a lease round trip and to amortise the broker's per-request cost
// (end to end, /bin/true tasks on 2 pilots × 2 slots: with a 20 ms window
// and a lease whenever a task finished, 14 tasks per lease request; with
// 100 ms and the low-water mark, ≈ 65, and 15–20 % less CPU per task
// together with the pilot's report interval, reportEvery), while the
// queue a pilot holds never lasts much longer than the window, which
// bounds the imbalance between pilots at the end of a run.
const prefetchWindow = 100 * time.Millisecond

// maxPrefetch bounds the adaptive prefetch of a module with slots slots.
func maxPrefetch(slots int) int { return min(512, 64*slots) }

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
