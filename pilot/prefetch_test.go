package pilot

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestAdaptivePrefetch(t *testing.T) {
	t.Parallel()
	m := &module{slots: 4}
	require.Equal(t, 4, m.prefetch(), "nothing learned: one per slot")

	m.slotTime.add(time.Second)
	require.Equal(t, 4, m.prefetch(), "long tasks: one per slot")

	m = &module{slots: 4}
	m.slotTime.add(time.Millisecond)
	require.Equal(t, 80, m.prefetch(), "1 ms tasks: what 4 slots run in 20 ms")

	m = &module{slots: 4}
	m.slotTime.add(time.Nanosecond)
	require.Equal(t, 128, m.prefetch(), "capped at 32 per slot")
	m = &module{slots: 64}
	m.slotTime.add(time.Nanosecond)
	require.Equal(t, 256, m.prefetch(), "capped at 256")
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
