package pilot

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/pbs"
	"github.com/scalebox-hpc/scalebox/slurm"
)

// DetectAllocation finds the batch job this process runs in (Slurm or
// PBS, from their environment variables) and its walltime end. ok is false
// outside a batch job. An allocation whose end could not be read is
// returned with a zero End and the error.
func DetectAllocation(ctx context.Context) (*batch.Allocation, bool, error) {
	if os.Getenv("SLURM_JOB_ID") != "" {
		return slurm.DetectAllocationContext(ctx, os.Getenv, batch.Exec{}, time.Local)
	}
	if os.Getenv("PBS_JOBID") != "" {
		a, err := pbs.New(batch.Exec{}).DetectAllocation(ctx, os.Getenv)
		if errors.Is(err, pbs.ErrNoAllocation) {
			return nil, false, nil
		}
		return a, a != nil, err
	}
	return nil, false, nil
}

// runtimes learns how long a module's tasks take on this pilot, so that a
// pilot near its walltime leases only what can finish (the 95th percentile
// of the last durations, when the module declares neither
// resources.expected_runtime nor task_max_seconds).
type runtimes struct {
	mu   sync.Mutex
	last []time.Duration // ring of recent durations
	next int
}

const runtimeWindow = 100

func (r *runtimes) add(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.last) < runtimeWindow {
		r.last = append(r.last, d)
		return
	}
	r.last[r.next] = d
	r.next = (r.next + 1) % runtimeWindow
}

func (r *runtimes) p95() time.Duration {
	r.mu.Lock()
	s := slices.Clone(r.last)
	r.mu.Unlock()
	if len(s) == 0 {
		return 0
	}
	slices.Sort(s)
	return s[(len(s)*95-1)/100]
}

// expected is how long a task of m is expected to take: declared, else
// its limit, else learned.
func (m *module) expected() time.Duration {
	if s := m.spec.Resources.ExpectedSeconds; s > 0 {
		return time.Duration(s) * time.Second
	}
	if s := m.spec.TaskMaxSeconds; s > 0 {
		return time.Duration(s) * time.Second
	}
	return m.runtimes.p95()
}

// fitsBeforeDeadline reports whether a task of m started now can finish
// before the pilot must stop (its walltime end less the grace period).
func (p *Pilot) fitsBeforeDeadline(m *module) bool {
	if p.cfg.Deadline.IsZero() {
		return true
	}
	return time.Now().Add(m.expected()).Before(p.cfg.Deadline.Add(-p.cfg.Grace))
}
