package pilot

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
)

func TestAdaptivePrefetch(t *testing.T) {
	t.Parallel()
	m := &module{slots: 4}
	require.Equal(t, 4, m.prefetch(), "nothing learned: one per slot")

	m.slotTime.add(time.Second)
	require.Equal(t, 4, m.prefetch(), "long tasks: one per slot")

	m = &module{slots: 4}
	m.slotTime.add(4 * time.Millisecond)
	require.Equal(t, 100, m.prefetch(), "4 ms tasks: what 4 slots run in 100 ms")

	m = &module{slots: 4}
	m.slotTime.add(time.Nanosecond)
	require.Equal(t, 256, m.prefetch(), "capped at 64 per slot")
	m = &module{slots: 64}
	m.slotTime.add(time.Nanosecond)
	require.Equal(t, 512, m.prefetch(), "capped at 512")
}

// TestLeaseLowWater: while tasks are queued, a module asks for more only
// once half its prefetch is used, so short tasks are leased in batches;
// with nothing queued it asks at once for whatever room it has.
func TestLeaseLowWater(t *testing.T) {
	t.Parallel()
	m := &module{id: 7, slots: 2, spec: &appspec.Module{}}
	m.slotTime.add(time.Millisecond) // prefetch: 2 slots × 100 ms / 1 ms, capped at 128
	require.Equal(t, 128, m.prefetch())
	p := &Pilot{free: map[int64]int{7: 0}, queued: map[int64]int{7: 128}}
	require.Nil(t, p.leaseRequest(m), "full")

	p.queued[7] = 65 // room 63 < 64
	require.Nil(t, p.leaseRequest(m), "above the low-water mark: wait")

	p.queued[7] = 64
	req := p.leaseRequest(m)
	require.NotNil(t, req, "at the low-water mark: refill")
	require.Equal(t, 64, req.Slots[0].Max)

	p.free[7], p.queued[7] = 1, 0
	req = p.leaseRequest(m)
	require.NotNil(t, req, "nothing queued: lease at once")
	require.Equal(t, 129, req.Slots[0].Max)

	long := &module{id: 8, slots: 2, spec: &appspec.Module{}}
	long.slotTime.add(time.Second) // prefetch = slots: the low-water mark is one task
	p.free[8], p.queued[8] = 0, 1
	req = p.leaseRequest(long)
	require.NotNil(t, req, "long tasks: one free place is enough")
	require.Equal(t, 1, req.Slots[0].Max)
}

func TestSlotTimeMovingAverage(t *testing.T) {
	t.Parallel()
	var s slotTime
	require.Zero(t, s.mean())
	s.add(8 * time.Millisecond)
	require.Equal(t, 8*time.Millisecond, s.mean(), "the first sample is the mean")
	s.add(16 * time.Millisecond)
	require.Equal(t, 9*time.Millisecond, s.mean(), "later samples weigh 1/8")
	for range 100 {
		s.add(time.Second)
	}
	require.InDelta(t, float64(time.Second), float64(s.mean()), float64(time.Millisecond), "converges to a new regime")
}

// TestNextBatchLinger: before the time given, and while the pilot holds
// leases whose results are still to come, nextBatch waits for more results
// (here until the batch is full or the results end); otherwise it takes
// only what is queued.
func TestNextBatchLinger(t *testing.T) {
	t.Parallel()
	p := &Pilot{held: map[int64]int{}}
	for i := range 1000 {
		p.held[int64(i)] = 1
	}
	results := make(chan *api.Result, 600)
	for i := range 5 {
		results <- &api.Result{TaskID: int64(i)}
	}
	batch, ok := p.nextBatch(results, time.Time{})
	require.True(t, ok)
	require.Len(t, batch, 5, "no linger: what is queued")

	for i := range 600 {
		results <- &api.Result{TaskID: int64(i)}
	}
	batch, _ = p.nextBatch(results, time.Now().Add(time.Hour))
	require.Len(t, batch, 512, "a full batch goes without waiting for the linger")

	go func() {
		for i := range 3 {
			results <- &api.Result{TaskID: int64(i)}
		}
		close(results)
	}()
	batch, ok = p.nextBatch(results, time.Now().Add(time.Hour))
	require.True(t, ok)
	require.Len(t, batch, 88+3, "lingering: results that come later join the batch, until the channel closes")
	_, ok = p.nextBatch(results, time.Time{})
	require.False(t, ok, "closed and empty")

	// Nothing else held: no result can come, so no waiting for one.
	p = &Pilot{held: map[int64]int{1: 1, 2: 1}}
	results = make(chan *api.Result, 2)
	results <- &api.Result{TaskID: 1}
	results <- &api.Result{TaskID: 2}
	batch, ok = p.nextBatch(results, time.Now().Add(time.Hour))
	require.True(t, ok)
	require.Len(t, batch, 2, "every held result gathered: it goes at once")
}
