// Package batch is the seam between Scalebox and HPC batch schedulers
// (Slurm in package slurm, PBS Pro/OpenPBS in package pbs): render a pilot
// job script, submit it, read the status of many jobs in one call, cancel,
// and detect the allocation the current process runs in.
//
// Implementations run scheduler commands through a Commander so that their
// parsers are pure functions, tested on recorded outputs and fuzzed.
package batch

import (
	"context"
	"io"
	"time"
)

// State is a job's state, mapped from the scheduler's native state through
// one table per scheduler.
type State string

// Job states.
const (
	Pending   State = "PENDING"   // queued, held, waiting
	Running   State = "RUNNING"   // running (or suspended/exiting, see Native)
	Completed State = "COMPLETED" // ended with exit code 0
	Failed    State = "FAILED"    // ended with a non-zero exit, node failure, boot failure
	Cancelled State = "CANCELLED" // deleted by a user or an admin
	Timeout   State = "TIMEOUT"   // killed at its walltime
	Unknown   State = "UNKNOWN"   // the scheduler no longer knows the job
)

// Final reports whether a state is final.
func (s State) Final() bool {
	switch s {
	case Completed, Failed, Cancelled, Timeout, Unknown:
		return true
	}
	return false
}

// JobSpec describes one pilot job (or job array).
type JobSpec struct {
	Name          string
	Queue         string // Slurm partition, PBS queue
	Account       string
	QOS           string
	Walltime      time.Duration
	Nodes         int
	TasksPerNode  int
	CoresPerTask  int
	MemoryMB      int64
	GPUs          int
	ArraySize     int           // > 1: a job array of this many pilots
	Output, Error string        // paths; "" = scheduler default
	SignalMargin  time.Duration // ask for SIGUSR1 this long before the walltime (Slurm --signal=B:USR1@N)
	Exclusive     bool
	Constraint    string
	ExcludeHosts  []string          // nodes not to run on (Slurm --exclude); quarantined black holes
	Extra         []string          // directives copied verbatim (without the #SBATCH/#PBS prefix)
	Env           map[string]string // exported in the script
	Command       []string          // the pilot command line; each word is shell-quoted in the script
	WorkDir       string
}

// JobID is a scheduler's job id ("123", "123_4", "123.server", "124[3].server").
type JobID string

// JobStatus is what a scheduler says of one job.
type JobStatus struct {
	ID       JobID
	State    State
	Native   string // the scheduler's own state string, for display
	Reason   string // the scheduler's reason or comment, if any
	ExitCode *int   // when known
	Node     string // first node, when running
}

// Scheduler submits, watches and cancels pilot jobs.
type Scheduler interface {
	Name() string // "slurm", "pbs"
	// Render writes the job script of spec.
	Render(w io.Writer, spec *JobSpec) error
	// Submit renders and submits spec and returns the job id.
	Submit(ctx context.Context, spec *JobSpec) (JobID, error)
	// Status reports on many jobs in one scheduler call; a job the
	// scheduler no longer knows is reported Unknown, not an error.
	Status(ctx context.Context, ids []JobID) (map[JobID]JobStatus, error)
	// Cancel cancels a job; cancelling a finished or unknown job is not an error.
	Cancel(ctx context.Context, id JobID) error
}

// Allocation is the batch job the current process runs in.
type Allocation struct {
	Scheduler string
	JobID     JobID
	ArrayIdx  int // -1 if not an array task
	Nodes     []string
	CPUs      int
	GPUs      int
	End       time.Time // walltime end; zero if unknown
}

// Commander runs a scheduler command. Tests replace it with recorded
// outputs; the product uses Exec.
type Commander interface {
	Run(ctx context.Context, name string, args []string, stdin io.Reader) (stdout, stderr []byte, err error)
}
