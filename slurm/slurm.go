// Package slurm implements batch.Scheduler for Slurm: sbatch scripts with
// #SBATCH directives, submission with `sbatch --parsable`, the status of
// many jobs with one fixed-format `squeue` call (and `sacct` for jobs that
// left the queue), `scancel`, and the detection of the allocation the
// current process runs in.
//
// Commands run through a batch.Commander; the parsers are pure functions,
// tested on outputs recorded from Slurm 22.05 and fuzzed.
package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

// Scheduler is Slurm behind batch.Scheduler.
type Scheduler struct {
	cmd      batch.Commander
	shell    string
	user     string // squeue -u; "" for all users
	loc      *time.Location
	maxTasks int
}

var _ batch.Scheduler = (*Scheduler)(nil)

// Option configures a Scheduler.
type Option func(*Scheduler)

// WithShell sets the script's interpreter (default /bin/bash).
func WithShell(path string) Option { return func(s *Scheduler) { s.shell = path } }

// WithUser restricts Status' squeue call to one user's jobs (default: the
// current user, whose pilots these are). "" lists every user's jobs.
func WithUser(name string) Option { return func(s *Scheduler) { s.user = name } }

// WithLocation sets the time zone in which Slurm prints times (default
// time.Local: the clients print in their own zone).
func WithLocation(loc *time.Location) Option { return func(s *Scheduler) { s.loc = loc } }

// WithMaxArrayTasks bounds how many task statuses Status reports for one
// requested array (default 10000); the array's own aggregate is always
// reported.
func WithMaxArrayTasks(n int) Option { return func(s *Scheduler) { s.maxTasks = n } }

// New returns a Slurm scheduler that runs commands through cmd (nil:
// batch.Exec{}, the commands on PATH).
func New(cmd batch.Commander, opts ...Option) *Scheduler {
	if cmd == nil {
		cmd = batch.Exec{}
	}
	s := &Scheduler{cmd: cmd, shell: "/bin/bash", loc: time.Local, maxTasks: 10000}
	if u, err := user.Current(); err == nil {
		s.user = u.Username
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Name implements batch.Scheduler.
func (s *Scheduler) Name() string { return "slurm" }

// Submit renders spec and submits it with `sbatch --parsable`, the script
// on stdin. A federation's "id;cluster" answer yields the id. A refused job
// is an error carrying sbatch's own message (a *batch.CommandError).
func (s *Scheduler) Submit(ctx context.Context, spec *batch.JobSpec) (batch.JobID, error) {
	var script bytes.Buffer
	if err := s.Render(&script, spec); err != nil {
		return "", err
	}
	out, _, err := s.cmd.Run(ctx, "sbatch", []string{"--parsable"}, &script)
	if err != nil {
		return "", fmt.Errorf("slurm: submit %q: %w", spec.Name, err)
	}
	id, _, err := ParseSbatch(out)
	return id, err
}

// Cancel implements batch.Scheduler with scancel. Cancelling an array's
// master id cancels all its tasks. A job Slurm no longer knows, or one that
// already ended, is not an error.
func (s *Scheduler) Cancel(ctx context.Context, id batch.JobID) error {
	if !validID(string(id)) {
		return fmt.Errorf("slurm: bad job id %q", id)
	}
	_, stderr, err := s.cmd.Run(ctx, "scancel", []string{string(id)}, nil)
	if err == nil {
		return nil
	}
	var ce *batch.CommandError
	msg := string(stderr)
	if errors.As(err, &ce) {
		msg += ce.Stderr
	}
	if gone(msg) {
		return nil
	}
	return fmt.Errorf("slurm: cancel %s: %w", id, err)
}

// gone reports whether a Slurm error message means the job is not there.
func gone(msg string) bool {
	m := strings.ToLower(msg)
	return strings.Contains(m, "invalid job id") ||
		strings.Contains(m, "already completing or completed") ||
		strings.Contains(m, "job has already finished")
}

// accountingOff reports sacct's answer when there is no accounting storage.
func accountingOff(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "accounting storage is disabled")
}

// Status implements batch.Scheduler: one `squeue -h -t all` call lists the
// user's jobs (finished ones stay for MinJobAge) and is filtered here; ids
// it does not show are asked of `sacct -X` in one call; ids neither knows
// (or all of them when accounting is disabled) are Unknown.
//
// Ids may be plain jobs ("123"), array tasks ("123_4", also when squeue
// still shows them as a pending range "123_[4-9]", or by their own job id)
// or array masters ("123", as sbatch prints it): a master is reported as an
// aggregate (Running if any task runs, else Pending if any waits, else the
// worst final state; Native like "COMPLETED*2,FAILED*1"), and each of its
// tasks is reported too, under "123_N" keys, up to WithMaxArrayTasks.
func (s *Scheduler) Status(ctx context.Context, ids []batch.JobID) (map[batch.JobID]batch.JobStatus, error) {
	res := make(map[batch.JobID]batch.JobStatus, len(ids))
	if len(ids) == 0 {
		return res, nil
	}
	args := []string{"-h", "-t", "all"}
	if s.user != "" {
		args = append(args, "-u", s.user)
	}
	args = append(args, "-O", squeueFields)
	out, _, err := s.cmd.Run(ctx, "squeue", args, nil)
	if err != nil {
		return nil, fmt.Errorf("slurm: status: %w", err)
	}
	recs, _ := ParseSqueue(out)
	idx := newIndex(recs)
	var missing []batch.JobID
	for _, id := range ids {
		if !s.resolve(idx, id, res) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return res, nil
	}

	reason := "not in squeue"
	var valid []string
	for _, id := range missing {
		if validID(string(id)) {
			valid = append(valid, string(id))
		}
	}
	if len(valid) > 0 {
		out, stderr, err := s.cmd.Run(ctx, "sacct", []string{"-X", "--parsable2", "--noheader",
			"-j", strings.Join(valid, ","), "-o", "JobID,State,ExitCode,Reason"}, nil)
		var ce *batch.CommandError
		switch {
		case err == nil:
			recs, _ := ParseSacct(out)
			idx = newIndex(recs)
			reason = "not in squeue or sacct"
		case errors.As(err, &ce) && accountingOff(ce.Stderr+string(stderr)+string(out)),
			accountingOff(string(stderr) + string(out)):
			idx = newIndex(nil)
			reason = "not in squeue; Slurm accounting storage is disabled"
		case errors.Is(err, exec.ErrNotFound):
			idx = newIndex(nil)
			reason = "not in squeue; no sacct"
		default:
			return nil, fmt.Errorf("slurm: status: %w", err)
		}
	}
	for _, id := range missing {
		switch {
		case !validID(string(id)):
			res[id] = batch.JobStatus{ID: id, State: batch.Unknown, Reason: "not a Slurm job id"}
		case !s.resolve(idx, id, res):
			res[id] = batch.JobStatus{ID: id, State: batch.Unknown, Reason: reason}
		}
	}
	return res, nil
}

// index finds records by the ids callers hold.
type index struct {
	byKey    map[string]*record   // "123" (plain job), "123_4" (single task)
	byRaw    map[string]*record   // a single task's own job id
	byMaster map[string][]*record // array master id → its tasks and ranges
}

func newIndex(recs []record) *index {
	x := &index{byKey: map[string]*record{}, byRaw: map[string]*record{}, byMaster: map[string][]*record{}}
	for i := range recs {
		r := &recs[i]
		if r.ArrayJob == "" {
			x.byKey[r.Key] = r
			continue
		}
		x.byMaster[r.ArrayJob] = append(x.byMaster[r.ArrayJob], r)
		if r.Task >= 0 {
			x.byKey[r.ArrayJob+"_"+strconv.Itoa(r.Task)] = r
			if r.RawID != "" {
				x.byRaw[r.RawID] = r
			}
		}
	}
	return x
}

func (s *Scheduler) resolve(x *index, id batch.JobID, res map[batch.JobID]batch.JobStatus) bool {
	sid := strings.TrimSpace(string(id))
	if master, task, ok := strings.Cut(sid, "_"); ok {
		if r := x.byKey[sid]; r != nil {
			res[id] = status(id, r)
			return true
		}
		n, err := atoiDigits(task)
		if err != nil {
			return false
		}
		for _, r := range x.byMaster[master] {
			if r.has(n) {
				res[id] = status(id, r)
				return true
			}
		}
		return false
	}
	if tasks := x.byMaster[sid]; len(tasks) > 0 {
		s.aggregate(id, tasks, res)
		return true
	}
	if r := x.byKey[sid]; r != nil {
		res[id] = status(id, r)
		return true
	}
	if r := x.byRaw[sid]; r != nil {
		res[id] = status(id, r)
		return true
	}
	return false
}

func status(id batch.JobID, r *record) batch.JobStatus {
	return batch.JobStatus{ID: id, State: MapState(r.Native), Native: r.Native, Reason: r.Reason, ExitCode: r.ExitCode, Node: r.Node}
}

// severity orders final states for an array's aggregate: the worst wins.
var severity = map[batch.State]int{batch.Completed: 0, batch.Unknown: 1, batch.Cancelled: 2, batch.Timeout: 3, batch.Failed: 4}

func (s *Scheduler) aggregate(id batch.JobID, recs []*record, res map[batch.JobID]batch.JobStatus) {
	agg := batch.JobStatus{ID: id}
	counts := map[string]int{}
	var best *record
	rank := func(r *record) int {
		switch st := MapState(r.Native); st {
		case batch.Running:
			return 100
		case batch.Pending:
			return 50
		default:
			return severity[st]
		}
	}
	emitted := 0
	for _, r := range recs {
		n := 1
		if r.Task < 0 {
			n = r.rangeTotal
		}
		counts[r.Native] += n
		if best == nil || rank(r) > rank(best) {
			best = r
		}
		for _, t := range r.tasks(s.maxTasks - emitted) {
			tid := batch.JobID(r.ArrayJob + "_" + strconv.Itoa(t))
			res[tid] = status(tid, r)
			emitted++
		}
	}
	agg.State = MapState(best.Native)
	agg.Reason, agg.ExitCode, agg.Node = best.Reason, best.ExitCode, best.Node
	if agg.State == batch.Running {
		for _, r := range recs {
			if MapState(r.Native) == batch.Running && agg.Node == "" {
				agg.Node = r.Node
			}
		}
	}
	natives := make([]string, 0, len(counts))
	for n, c := range counts {
		natives = append(natives, n+"*"+strconv.Itoa(c))
	}
	sort.Strings(natives)
	agg.Native = strings.Join(natives, ",")
	res[id] = agg
}
