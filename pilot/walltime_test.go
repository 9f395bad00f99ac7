package pilot

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/appspec"
)

func TestRuntimesP95(t *testing.T) {
	t.Parallel()
	var r runtimes
	require.Zero(t, r.p95())
	for i := 1; i <= 250; i++ { // the window keeps the last 100: 151..250
		r.add(time.Duration(i) * time.Millisecond)
	}
	require.Equal(t, 245*time.Millisecond, r.p95())
}

func TestFitsBeforeDeadline(t *testing.T) {
	t.Parallel()
	p := &Pilot{cfg: Config{Grace: 10 * time.Second}}
	declared := &module{spec: &appspec.Module{Resources: appspec.Resources{ExpectedSeconds: 60}}}
	limited := &module{spec: &appspec.Module{TaskMaxSeconds: 5}}
	learned := &module{spec: &appspec.Module{}}
	learned.runtimes.add(time.Minute)

	require.True(t, p.fitsBeforeDeadline(declared), "no deadline: anything fits")
	p.cfg.Deadline = time.Now().Add(40 * time.Second)
	require.False(t, p.fitsBeforeDeadline(declared), "60 s expected, 30 s left before the grace")
	require.True(t, p.fitsBeforeDeadline(limited), "task_max_seconds 5 fits")
	require.False(t, p.fitsBeforeDeadline(learned), "learned p95 of a minute does not")
	p.cfg.Deadline = time.Now().Add(5 * time.Minute)
	require.True(t, p.fitsBeforeDeadline(declared))
}
