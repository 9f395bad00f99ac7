// Package pbs implements batch.Scheduler for PBS Pro / OpenPBS: qsub
// scripts with #PBS directives, qsub/qstat/qdel through a batch.Commander,
// and allocation detection from the PBS_* environment.
//
// Parsers are pure functions (ParseSubmit, ParseQstat) tested on outputs
// recorded from a real OpenPBS 23.06 server (testdata/samples) and fuzzed.
// End-to-end tests run against a test double of OpenPBS (package pbstest);
// no real PBS server is involved in this repository's tests.
package pbs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

// Scheduler is PBS behind batch.Scheduler.
type Scheduler struct {
	cmd       batch.Commander
	history   bool
	scriptDir string
	shell     string
	now       func() time.Time
	loc       *time.Location
}

// Option configures a Scheduler.
type Option func(*Scheduler)

// WithHistory sets whether Status passes -x (job history, needs the
// server's job_history_enable=true). Default true; without history a job
// that left the queue is reported Unknown.
func WithHistory(on bool) Option { return func(s *Scheduler) { s.history = on } }

// WithScriptDir sets where Submit writes the script file given to qsub
// (default os.TempDir()). qsub copies the script, so it is removed after.
func WithScriptDir(dir string) Option { return func(s *Scheduler) { s.scriptDir = dir } }

// WithShell sets the script's interpreter line (default /bin/bash).
func WithShell(sh string) Option { return func(s *Scheduler) { s.shell = sh } }

// WithClock sets the clock and the server's time zone (qstat prints local
// times without a zone); for tests.
func WithClock(now func() time.Time, loc *time.Location) Option {
	return func(s *Scheduler) { s.now, s.loc = now, loc }
}

// New returns a PBS scheduler running its commands through cmd.
func New(cmd batch.Commander, opts ...Option) *Scheduler {
	s := &Scheduler{cmd: cmd, history: true, shell: "/bin/bash", now: time.Now, loc: time.Local}
	for _, o := range opts {
		o(s)
	}
	return s
}

var _ batch.Scheduler = (*Scheduler)(nil)

// Name implements batch.Scheduler.
func (s *Scheduler) Name() string { return "pbs" }

// Submit implements batch.Scheduler: it renders spec into a file and runs
// `qsub FILE`. A refused submission is a *batch.CommandError carrying
// PBS's message ("qsub: Bad UID for job execution", rc 175).
func (s *Scheduler) Submit(ctx context.Context, spec *batch.JobSpec) (batch.JobID, error) {
	f, err := os.CreateTemp(s.scriptDir, "scalebox-pbs-*.sh")
	if err != nil {
		return "", fmt.Errorf("pbs: script file: %w", err)
	}
	defer os.Remove(f.Name())
	if err := s.Render(f, spec); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("pbs: script file: %w", err)
	}
	if spec.WorkDir != "" {
		ctx = batch.InDir(ctx, spec.WorkDir)
	}
	out, errb, err := s.cmd.Run(ctx, "qsub", []string{f.Name()}, nil)
	if err != nil {
		return "", commandError("qsub", err, errb)
	}
	id, perr := ParseSubmit(out)
	if perr != nil {
		return "", &batch.CommandError{Cmd: "qsub", Stderr: fmt.Sprintf("%v; stdout %q stderr %q", perr, out, errb)}
	}
	return id, nil
}

// Status implements batch.Scheduler with one
// `qstat -x -t -f -F json [ids…]` call (-x only WithHistory). -t adds the
// subjobs of array parents to the result, keyed by their own ids. Ids
// qstat does not know are Unknown. Ids may be given without the server
// suffix ("123"); results for asked ids are keyed as asked.
func (s *Scheduler) Status(ctx context.Context, ids []batch.JobID) (map[batch.JobID]batch.JobStatus, error) {
	args := []string{}
	if s.history {
		args = append(args, "-x")
	}
	args = append(args, "-t", "-f", "-F", "json")
	for _, id := range ids {
		args = append(args, string(id))
	}
	out, errb, err := s.cmd.Run(ctx, "qstat", args, nil)
	if err != nil {
		var ce *batch.CommandError
		// 153 unknown job id, 35 finished job without -x: the other jobs
		// are still on stdout.
		if !errors.As(err, &ce) || (ce.ExitCode != 153 && ce.ExitCode != 35) {
			return nil, commandError("qstat", err, errb)
		}
	}
	res, perr := ParseQstat(out)
	if perr != nil && len(res.Jobs) == 0 && len(ids) > 0 && err == nil {
		return nil, fmt.Errorf("pbs: qstat: %w", perr)
	}
	gone := ParseQstatErrors(errb)
	return matchStatus(ids, res.Jobs, gone), nil
}

// Cancel implements batch.Scheduler with qdel. An unknown job (rc 153) or
// a finished one (rc 35) is not an error.
func (s *Scheduler) Cancel(ctx context.Context, id batch.JobID) error {
	_, errb, err := s.cmd.Run(ctx, "qdel", []string{string(id)}, nil)
	if err != nil {
		var ce *batch.CommandError
		if errors.As(err, &ce) && (ce.ExitCode == 153 || ce.ExitCode == 35) {
			return nil
		}
		return commandError("qdel", err, errb)
	}
	return nil
}

// commandError returns err as a *batch.CommandError carrying stderr.
func commandError(cmd string, err error, stderr []byte) error {
	var ce *batch.CommandError
	if errors.As(err, &ce) {
		if ce.Stderr == "" && len(stderr) > 0 {
			c := *ce
			c.Stderr = string(stderr)
			return &c
		}
		return ce
	}
	return fmt.Errorf("pbs: %s: %w", cmd, err)
}
