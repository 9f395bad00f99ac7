package provision_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/provision"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

// fakeSched is a scheduler whose jobs change state when the test says so.
type fakeSched struct {
	mu       sync.Mutex
	next     int
	jobs     map[batch.JobID]*fakeJob
	refuse   string // non-empty: Submit fails with this message
	statuses int    // Status calls
	cancels  []batch.JobID
	submits  []*batch.JobSpec
}

type fakeJob struct {
	tasks []batch.State // one per array task (or one)
	array bool
}

func newFake() *fakeSched { return &fakeSched{jobs: map[batch.JobID]*fakeJob{}, next: 100} }

func (f *fakeSched) Name() string                           { return "fake" }
func (f *fakeSched) Render(io.Writer, *batch.JobSpec) error { return nil }

func (f *fakeSched) Submit(_ context.Context, spec *batch.JobSpec) (batch.JobID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submits = append(f.submits, spec)
	if f.refuse != "" {
		return "", &batch.CommandError{Cmd: "sbatch", ExitCode: 1, Stderr: f.refuse + "\n"}
	}
	f.next++
	id := batch.JobID(strconv.Itoa(f.next))
	n := max(1, spec.ArraySize)
	j := &fakeJob{array: spec.ArraySize > 1}
	for range n {
		j.tasks = append(j.tasks, batch.Pending)
	}
	f.jobs[id] = j
	return id, nil
}

func (f *fakeSched) Status(_ context.Context, ids []batch.JobID) (map[batch.JobID]batch.JobStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses++
	out := map[batch.JobID]batch.JobStatus{}
	for _, id := range ids {
		j, ok := f.jobs[id]
		if !ok {
			out[id] = batch.JobStatus{ID: id, State: batch.Unknown}
			continue
		}
		agg := batch.Completed
		for i, s := range j.tasks {
			if j.array {
				sub := batch.JobID(fmt.Sprintf("%s_%d", id, i))
				out[sub] = batch.JobStatus{ID: sub, State: s, Native: string(s)}
			}
			switch {
			case s == batch.Running:
				agg = batch.Running
			case s == batch.Pending && agg != batch.Running:
				agg = batch.Pending
			case (s == batch.Failed || s == batch.Cancelled) && agg == batch.Completed:
				agg = s
			}
		}
		js := batch.JobStatus{ID: id, State: agg, Native: string(agg)}
		if agg == batch.Failed {
			code := 127
			js.ExitCode = &code
			js.Reason = "NonZeroExitCode"
		}
		out[id] = js
	}
	return out, nil
}

func (f *fakeSched) Cancel(_ context.Context, id batch.JobID) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancels = append(f.cancels, id)
	if j, ok := f.jobs[id]; ok {
		for i := range j.tasks {
			if !j.tasks[i].Final() {
				j.tasks[i] = batch.Cancelled
			}
		}
	}
	return nil
}

// set moves the tasks of job id to state (all if idx is empty).
func (f *fakeSched) set(id string, state batch.State, idx ...int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[batch.JobID(id)]
	if len(idx) == 0 {
		for i := range j.tasks {
			j.tasks[i] = state
		}
	}
	for _, i := range idx {
		j.tasks[i] = state
	}
}

func (f *fakeSched) counts() (submits, statuses int, cancels []batch.JobID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.submits), f.statuses, append([]batch.JobID(nil), f.cancels...)
}

type env struct {
	t     *testing.T
	ctx   context.Context
	st    store.Store
	sched *fakeSched
	p     *provision.Provisioner
	now   time.Time
	logs  string
	app   *store.App
}

const siteYAML = `name: hpc
kind: slurm
broker: http://login:8080
pilot: {binary: /opt/scalebox, walltime: 1h, slots: {calc: 4}}
limits: {max_pilots: 5, max_queued: 3, idle_timeout: 2m}
`

func newEnv(t *testing.T, siteDef string) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, "")
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	spec, err := site.Parse("site.yaml", []byte(siteDef))
	require.NoError(t, err)
	js, err := json.Marshal(spec)
	require.NoError(t, err)
	require.NoError(t, st.SitePut(ctx, &store.Site{Name: spec.Name, Kind: spec.Kind, Spec: js}))
	app, err := st.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning, Spec: []byte(`{}`),
		Modules: []store.ModuleParams{{Name: "calc", Site: "hpc", Spec: []byte(`{}`)}, {Name: "merge", Spec: []byte(`{}`)}}})
	require.NoError(t, err)
	e := &env{t: t, ctx: ctx, st: st, sched: newFake(), now: time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC),
		logs: t.TempDir(), app: app}
	e.p = provision.New(st, provision.Config{
		Interval: 10 * time.Second, MaxInterval: 40 * time.Second, Backoff: time.Minute, MaxBackoff: 4 * time.Minute,
		LogDir:     e.logs,
		Schedulers: func(*site.Spec) (batch.Scheduler, error) { return e.sched, nil },
		Now:        func() time.Time { return e.now },
	}, nil)
	return e
}

func (e *env) addTasks(n int) {
	e.t.Helper()
	var in []store.TaskInput
	for i := range n {
		in = append(in, store.TaskInput{ModuleID: e.app.Modules[0].ID, Body: fmt.Sprintf("t%d-%d", e.now.Unix(), i), Status: store.StatusReady})
	}
	_, err := e.st.TaskAdd(e.ctx, store.TaskAddParams{AppID: e.app.ID, Tasks: in})
	require.NoError(e.t, err)
}

// finishAll runs every waiting task to success through a pilot started by hand.
func (e *env) finishAll() {
	e.t.Helper()
	pl, err := e.st.PilotRegister(e.ctx, &store.Pilot{Site: "laptop", Host: "h", Slots: "{}"})
	require.NoError(e.t, err)
	ls, err := e.st.TaskLease(e.ctx, store.TaskLeaseParams{PilotID: pl.ID, TTL: time.Minute,
		Modules: []store.ModuleLease{{ModuleID: e.app.Modules[0].ID, Max: 1000}}})
	require.NoError(e.t, err)
	var cs []store.Completion
	for _, l := range ls {
		cs = append(cs, store.Completion{TaskID: l.TaskID, Attempt: l.Attempt, PilotID: pl.ID, Kind: store.KindApp})
	}
	_, err = e.st.TaskComplete(e.ctx, store.TaskCompleteParams{Completions: cs})
	require.NoError(e.t, err)
}

func (e *env) cycle(d time.Duration) {
	e.t.Helper()
	e.now = e.now.Add(d)
	require.NoError(e.t, e.p.Cycle(e.ctx))
}

func (e *env) jobs() []*store.PilotJob {
	e.t.Helper()
	js, err := e.st.PilotJobList(e.ctx, store.PilotJobFilter{Site: "hpc"})
	require.NoError(e.t, err)
	return js
}

func TestBacklogSubmitsArraysWithinLimits(t *testing.T) {
	e := newEnv(t, siteYAML)
	e.cycle(0)
	require.Empty(t, e.jobs(), "no backlog, no pilots")

	// 30 calc tasks, 4 slots a pilot: 8 wanted, max_pilots 5, max_queued 3:
	// one array of 3.
	e.addTasks(30)
	e.cycle(time.Second)
	js := e.jobs()
	require.Len(t, js, 1)
	require.Equal(t, 3, js[0].Count)
	require.Equal(t, "101", js[0].JobID)
	require.EqualValues(t, e.app.ID, js[0].AppID)
	require.Equal(t, string(batch.Pending), js[0].State)
	sub := e.sched.submits[0]
	require.Equal(t, 3, sub.ArraySize)
	require.Equal(t, filepath.Join(e.logs, "hpc", "%x-%A_%a.out"), sub.Output)
	require.Contains(t, sub.Command, "--max-idle", "idle pilots retire themselves")
	require.Contains(t, sub.Command, "2m0s")
	st := e.p.Status("hpc")
	require.Equal(t, 5, st.Wanted)
	require.Equal(t, 3, st.Pending)

	// Still pending: nothing more (max_queued), and no status query
	// before the interval.
	e.cycle(time.Second)
	submits, statuses, _ := e.sched.counts()
	require.Equal(t, 1, submits)
	require.Equal(t, 0, statuses)

	// Two start running: two more may queue, within max_pilots 5.
	e.sched.set("101", batch.Running, 0, 1)
	e.cycle(10 * time.Second)
	submits, statuses, _ = e.sched.counts()
	require.Equal(t, 1, statuses, "one status query for the site")
	require.Equal(t, 2, submits)
	js = e.jobs()
	require.Len(t, js, 2)
	require.Equal(t, 2, js[0].Count)
	require.Equal(t, string(batch.Running), js[1].State)
	require.Equal(t, "RUNNING", js[1].Native)
	e.cycle(10 * time.Second)
	submits, _, _ = e.sched.counts()
	require.Equal(t, 2, submits, "max_pilots reached")
}

func TestStatusQueryIsAdaptive(t *testing.T) {
	e := newEnv(t, siteYAML)
	e.addTasks(4)
	e.cycle(0)
	require.Len(t, e.jobs(), 1)
	// Nothing changes: queries at +10s, then +20s, then +40s (the max).
	var at []int
	for s := 1; s <= 120; s++ {
		_, before, _ := e.sched.counts()
		e.cycle(time.Second)
		if _, after, _ := e.sched.counts(); after > before {
			at = append(at, s)
		}
	}
	// The first query sees "submitted" → PENDING, a change: 10s again.
	require.Equal(t, []int{10, 20, 40, 80, 120}, at)
}

func TestRefusedSubmissionBacksOff(t *testing.T) {
	e := newEnv(t, siteYAML)
	e.sched.refuse = "sbatch: error: invalid partition specified: nope"
	e.addTasks(4)
	err := e.p.Cycle(e.ctx)
	require.ErrorContains(t, err, "invalid partition")
	js := e.jobs()
	require.Len(t, js, 1)
	require.Equal(t, store.PilotJobRefused, js[0].State)
	require.Equal(t, "sbatch: error: invalid partition specified: nope", js[0].Reason)
	require.True(t, js[0].Final)
	st := e.p.Status("hpc")
	require.Equal(t, 1, st.Failures)
	require.Contains(t, st.LastError, "fake refused the pilot job: sbatch: error: invalid partition")

	// Backed off: no resubmission for a minute, then 2, then 4 (max).
	var at []int
	for s := 1; s <= 9*60; s++ {
		before, _, _ := e.sched.counts()
		e.now = e.now.Add(time.Second)
		_ = e.p.Cycle(e.ctx)
		if after, _, _ := e.sched.counts(); after > before {
			at = append(at, s)
		}
	}
	require.Equal(t, []int{60, 180, 420}, at)

	// Fixed: the next attempt goes through and the failures reset once
	// pilots run.
	e.sched.refuse = ""
	e.cycle(5 * time.Minute)
	js = e.jobs()
	require.Equal(t, string(batch.Pending), js[0].State)
	e.sched.set(js[0].JobID, batch.Running)
	e.cycle(10 * time.Second)
	require.Zero(t, e.p.Status("hpc").Failures)
}

func TestJobFailingAtStartIsReportedWithItsOutput(t *testing.T) {
	e := newEnv(t, siteYAML)
	e.addTasks(1)
	e.cycle(0)
	js := e.jobs()
	require.Len(t, js, 1)
	require.NoError(t, os.WriteFile(filepath.Join(e.logs, "hpc", "scalebox-hpc-"+js[0].JobID+".out"),
		[]byte("/var/spool/slurmd/job101/slurm_script: line 9: /opt/scalebox: No such file or directory\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(e.logs, "hpc", "scalebox-hpc-1010.out"), []byte("another job"), 0o644))
	e.sched.set(js[0].JobID, batch.Failed)
	e.cycle(10 * time.Second)
	js = e.jobs()
	require.Equal(t, string(batch.Failed), js[0].State)
	require.True(t, js[0].Final)
	require.Contains(t, js[0].Reason, "failed before any pilot started")
	require.Contains(t, js[0].Reason, "exit code 127")
	require.Contains(t, js[0].Reason, "/opt/scalebox: No such file or directory")
	require.NotContains(t, js[0].Reason, "another job")
	st := e.p.Status("hpc")
	require.Equal(t, 1, st.Failures)
	require.Equal(t, e.now.Add(time.Minute), st.BackoffUntil)
	e.cycle(30 * time.Second)
	submits, _, _ := e.sched.counts()
	require.Equal(t, 1, submits, "backed off")
	e.cycle(31 * time.Second)
	submits, _, _ = e.sched.counts()
	require.Equal(t, 2, submits)
}

func TestJobFailingAfterItsPilotRegisteredIsNoStartFailure(t *testing.T) {
	e := newEnv(t, siteYAML)
	e.addTasks(1)
	e.cycle(0)
	js := e.jobs()
	_, err := e.st.PilotRegister(e.ctx, &store.Pilot{Site: "hpc", Host: "cn1", JobID: js[0].JobID, Slots: "{}"})
	require.NoError(t, err)
	e.sched.set(js[0].JobID, batch.Failed)
	e.cycle(10 * time.Second)
	require.Zero(t, e.p.Status("hpc").Failures)
	submits, _, _ := e.sched.counts()
	require.Equal(t, 2, submits, "the task still waits: a new pilot, no back-off")
}

func TestCancelsWhenBacklogGoesOrAppEnds(t *testing.T) {
	e := newEnv(t, siteYAML)
	e.addTasks(4)
	e.cycle(0)
	js := e.jobs()
	require.Len(t, js, 1)

	// The tasks were done elsewhere (by a pilot started by hand): the
	// pending job is not needed any more.
	e.finishAll()
	e.cycle(time.Second)
	_, _, cancels := e.sched.counts()
	require.Equal(t, []batch.JobID{batch.JobID(js[0].JobID)}, cancels)
	e.cycle(10 * time.Second)
	js = e.jobs()
	require.Equal(t, string(batch.Cancelled), js[0].State)
	require.True(t, js[0].Final)

	// New work, a running pilot, then the app ends: its job is cancelled.
	e.addTasks(2)
	e.cycle(time.Second)
	js = e.jobs()
	require.Len(t, js, 2)
	e.sched.set(js[0].JobID, batch.Running)
	e.cycle(10 * time.Second)
	require.NoError(t, e.st.AppSetStatus(e.ctx, e.app.ID, store.AppCancelled, nil))
	e.cycle(time.Second)
	_, _, cancels = e.sched.counts()
	require.Equal(t, batch.JobID(js[0].JobID), cancels[len(cancels)-1])
	e.cycle(time.Second)
	_, _, again := e.sched.counts()
	require.Equal(t, cancels, again, "cancelled once")
}

func TestManualSubmitAndCancel(t *testing.T) {
	e := newEnv(t, siteYAML)
	j, err := e.p.Submit(e.ctx, "hpc", e.app.ID, 2)
	require.NoError(t, err)
	require.Equal(t, 2, j.Count)
	require.Equal(t, string(batch.Pending), j.State)
	_, err = e.p.Submit(e.ctx, "nowhere", e.app.ID, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
	_, err = e.p.Submit(e.ctx, "hpc", e.app.ID, 0)
	require.Error(t, err)

	got, err := e.p.CancelJob(e.ctx, j.ID)
	require.NoError(t, err)
	require.Equal(t, j.JobID, got.JobID)
	_, _, cancels := e.sched.counts()
	require.Equal(t, []batch.JobID{batch.JobID(j.JobID)}, cancels)

	pl, err := e.st.PilotRegister(e.ctx, &store.Pilot{Site: "hpc", Host: "cn1", JobID: "555_3", Slots: "{}"})
	require.NoError(t, err)
	_, err = e.p.CancelPilot(e.ctx, pl.ID)
	require.NoError(t, err)
	_, _, cancels = e.sched.counts()
	require.Equal(t, batch.JobID("555_3"), cancels[len(cancels)-1])
	local, err := e.st.PilotRegister(e.ctx, &store.Pilot{Site: "hpc", Host: "cn1", Slots: "{}"})
	require.NoError(t, err)
	_, err = e.p.CancelPilot(e.ctx, local.ID)
	require.ErrorIs(t, err, provision.ErrNotBatch)
}

func TestLocalSitesAreLeftAlone(t *testing.T) {
	e := newEnv(t, "name: hpc\nkind: local\n")
	e.addTasks(3)
	e.cycle(0)
	require.Empty(t, e.jobs())
	_, err := e.p.Submit(e.ctx, "hpc", e.app.ID, 1)
	require.ErrorIs(t, err, provision.ErrNotBatch)
}

// The hosts of the site's quarantined pilots are left out of its later
// pilot jobs.
func TestQuarantinedHostsAreExcluded(t *testing.T) {
	e := newEnv(t, siteYAML)
	for _, h := range []string{"node12", "node07", "node12"} {
		pl, err := e.st.PilotRegister(e.ctx, &store.Pilot{Site: "hpc", Host: h, Slots: "{}"})
		require.NoError(t, err)
		require.NoError(t, e.st.PilotSetStatus(e.ctx, pl.ID, store.PilotQuarantined))
	}
	ok, err := e.st.PilotRegister(e.ctx, &store.Pilot{Site: "hpc", Host: "node01", Slots: "{}"})
	require.NoError(t, err)
	require.NotZero(t, ok.ID)
	e.addTasks(4)
	e.cycle(time.Second)
	require.Len(t, e.sched.submits, 1)
	require.Equal(t, []string{"node07", "node12"}, e.sched.submits[0].ExcludeHosts)
}
