// Package provision keeps the pilots of each batch site in line with the
// backlog of the modules that run there.
//
// Each cycle, for every slurm or pbs site, the provisioner
//   - asks the site's scheduler about all its unfinished pilot jobs in one
//     call (at most every Interval, growing to MaxInterval while nothing
//     changes) and records their state in the store;
//   - for each running app with modules on the site, wants
//     max over modules of ⌈(ready + leased tasks) ÷ slots per pilot⌉ pilots
//     (at least limits.min_pilots, at most limits.max_pilots), and submits
//     the missing ones as one job array, never more pending pilots than
//     limits.max_queued;
//   - cancels pending jobs the backlog no longer needs and every job of an
//     app that ended.
//
// Idle pilots retire themselves (--max-idle, from the site's idle timeout).
// A submission the scheduler refuses, or a job that fails before any of
// its pilots registered (a bad partition, a missing binary), is recorded
// with the scheduler's own message and the job's output, and the site backs
// off (Backoff, doubling up to MaxBackoff) instead of resubmitting in a loop.
package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/pbs"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/slurm"
	"github.com/scalebox-hpc/scalebox/store"
)

// Store is what the provisioner reads and records.
type Store interface {
	SiteList(ctx context.Context) ([]*store.Site, error)
	SiteGet(ctx context.Context, name string) (*store.Site, error)
	AppList(ctx context.Context) ([]*store.App, error)
	AppTaskCounts(ctx context.Context, appID int64) ([]store.StatusCount, error)
	PilotGet(ctx context.Context, id int64) (*store.Pilot, error)
	PilotList(ctx context.Context, f store.PilotFilter) ([]*store.Pilot, error)
	PilotJobAdd(ctx context.Context, j *store.PilotJob) (*store.PilotJob, error)
	PilotJobGet(ctx context.Context, id int64) (*store.PilotJob, error)
	PilotJobList(ctx context.Context, f store.PilotJobFilter) ([]*store.PilotJob, error)
	PilotJobUpdate(ctx context.Context, us []store.PilotJobUpdate) error
}

// SchedulerFor returns the batch scheduler of a site.
type SchedulerFor func(s *site.Spec) (batch.Scheduler, error)

// DefaultSchedulers runs the scheduler commands found on PATH.
func DefaultSchedulers(s *site.Spec) (batch.Scheduler, error) {
	switch s.Kind {
	case "slurm":
		return slurm.New(nil), nil
	case "pbs":
		return pbs.New(nil, pbs.WithHistory(true)), nil
	}
	return nil, fmt.Errorf("site %s: kind %q has no batch scheduler", s.Name, s.Kind)
}

// Config tunes the provisioner. Zero values take the defaults.
type Config struct {
	Interval    time.Duration // cycle period and shortest status-query period per site; default 10s
	MaxInterval time.Duration // longest status-query period while nothing changes; default 60s
	Backoff     time.Duration // first pause after a failed start; default 1m
	MaxBackoff  time.Duration // default 30m
	LogDir      string        // pilot job outputs go to LogDir/<site>; default ~/.scalebox/jobs
	Schedulers  SchedulerFor  // default DefaultSchedulers
	Now         func() time.Time
}

// ErrNotBatch is returned for sites whose pilots are not batch jobs.
var ErrNotBatch = errors.New("not a batch site")

// SiteStatus is the provisioner's view of one site, for `scalebox site show`.
type SiteStatus struct {
	Wanted       int       `json:"wanted"`         // pilots the backlog asks for, within the limits
	Live         int       `json:"live"`           // pilots in unfinished jobs (pending or running)
	Pending      int       `json:"pending"`        // of which still queued
	Failures     int       `json:"failures"`       // failed starts in a row
	BackoffUntil time.Time `json:"backoff_until"`  // no automatic submission before
	LastError    string    `json:"last_error"`     // the last failed start or scheduler error
	LastStatusAt time.Time `json:"last_status_at"` // the last status query
}

// Provisioner submits, watches and cancels pilot jobs. Its methods are
// safe for concurrent use; scheduler commands run one at a time.
type Provisioner struct {
	st  Store
	cfg Config
	log *zap.Logger

	mu    sync.Mutex
	sites map[string]*siteState
}

type siteState struct {
	status   SiteStatus
	interval time.Duration
	next     time.Time           // next status query
	counts   map[int64]jobCounts // by pilot-job record id, from the last status query
	sched    batch.Scheduler     // cached per site kind
	kind     string              // of sched
	cancels  map[int64]bool      // records whose cancellation was asked
}

// jobCounts is how many pilots of a job wait and run.
type jobCounts struct{ pending, running int }

// New returns a provisioner over st.
func New(st Store, cfg Config, log *zap.Logger) *Provisioner {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.MaxInterval < cfg.Interval {
		cfg.MaxInterval = max(6*cfg.Interval, 60*time.Second)
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = time.Minute
	}
	if cfg.MaxBackoff < cfg.Backoff {
		cfg.MaxBackoff = max(cfg.Backoff, 30*time.Minute)
	}
	if cfg.LogDir == "" {
		home, _ := os.UserHomeDir()
		cfg.LogDir = filepath.Join(home, ".scalebox", "jobs")
	}
	if cfg.Schedulers == nil {
		cfg.Schedulers = DefaultSchedulers
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Provisioner{st: st, cfg: cfg, log: log.Named("provision"), sites: map[string]*siteState{}}
}

// Run cycles every Interval until ctx ends.
func (p *Provisioner) Run(ctx context.Context) error {
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if err := p.Cycle(ctx); err != nil && ctx.Err() == nil {
			p.log.Warn("provisioning cycle", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Cycle runs one provisioning pass over every batch site.
func (p *Provisioner) Cycle(ctx context.Context) error {
	sites, err := p.st.SiteList(ctx)
	if err != nil {
		return err
	}
	apps, err := p.st.AppList(ctx)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, s := range sites {
		spec, err := decodeSite(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if spec.Kind != "slurm" && spec.Kind != "pbs" {
			continue
		}
		if err := p.cycleSite(ctx, spec, apps); err != nil {
			errs = append(errs, fmt.Errorf("site %s: %w", spec.Name, err))
		}
	}
	return errors.Join(errs...)
}

func decodeSite(s *store.Site) (*site.Spec, error) {
	var spec site.Spec
	if err := json.Unmarshal(s.Spec, &spec); err != nil {
		return nil, fmt.Errorf("site %s: decode definition: %w", s.Name, err)
	}
	if spec.Name == "" {
		spec.Name = s.Name
	}
	if spec.Kind == "" {
		spec.Kind = s.Kind
	}
	return &spec, nil
}

func (p *Provisioner) state(name string) *siteState {
	ss := p.sites[name]
	if ss == nil {
		ss = &siteState{interval: p.cfg.Interval, counts: map[int64]jobCounts{}, cancels: map[int64]bool{}}
		p.sites[name] = ss
	}
	return ss
}

func (p *Provisioner) scheduler(ss *siteState, spec *site.Spec) (batch.Scheduler, error) {
	if ss.sched == nil || ss.kind != spec.Kind {
		s, err := p.cfg.Schedulers(spec)
		if err != nil {
			return nil, err
		}
		ss.sched, ss.kind = s, spec.Kind
	}
	return ss.sched, nil
}

func (p *Provisioner) cycleSite(ctx context.Context, spec *site.Spec, apps []*store.App) error {
	ss := p.state(spec.Name)
	sched, err := p.scheduler(ss, spec)
	if err != nil {
		return err
	}
	jobs, err := p.st.PilotJobList(ctx, store.PilotJobFilter{Site: spec.Name, Active: true})
	if err != nil {
		return err
	}
	now := p.cfg.Now()
	if len(jobs) > 0 && !now.Before(ss.next) {
		jobs, err = p.refresh(ctx, spec, ss, sched, jobs)
		if err != nil {
			return err
		}
	}

	var errs []error
	siteLive, sitePending := 0, 0
	for _, j := range jobs {
		c := ss.jobCounts(j)
		siteLive += c.pending + c.running
		sitePending += c.pending
	}
	ss.status.Wanted = 0
	for _, a := range apps {
		mods := modulesOn(a, spec.Name)
		if len(mods) == 0 {
			continue
		}
		var mine []*store.PilotJob
		for _, j := range jobs {
			if j.AppID == a.ID {
				mine = append(mine, j)
			}
		}
		if a.Status == store.AppFinished || a.Status == store.AppCancelled {
			for _, j := range mine {
				errs = append(errs, p.cancelOnce(ctx, ss, sched, j, "app "+strings.ToLower(a.Status)))
			}
			continue
		}
		if a.Status != store.AppRunning {
			continue // INITIAL or PAUSED: no new pilots, keep the ones there are
		}
		wanted, err := p.wanted(ctx, spec, a, mods)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ss.status.Wanted += wanted
		live, pending := 0, 0
		for _, j := range mine {
			if ss.cancels[j.ID] {
				continue
			}
			c := ss.jobCounts(j)
			live += c.pending + c.running
			pending += c.pending
		}
		switch n := wanted - live; {
		case n > 0:
			if spec.Limits.MaxPilots > 0 {
				n = min(n, spec.Limits.MaxPilots-siteLive)
			}
			if spec.Limits.MaxQueued > 0 {
				n = min(n, spec.Limits.MaxQueued-sitePending)
			}
			if n <= 0 || now.Before(ss.status.BackoffUntil) {
				continue
			}
			if _, err := p.submit(ctx, spec, ss, sched, a.ID, n); err != nil {
				errs = append(errs, err)
				continue
			}
			siteLive += n
			sitePending += n
		case n < 0 && pending > 0:
			// The backlog shrank before these pilots started: cancel
			// whole pending jobs, newest first, that are not needed.
			surplus := min(-n, pending)
			for _, j := range mine { // newest first
				c := ss.jobCounts(j)
				if ss.cancels[j.ID] || c.running > 0 || c.pending == 0 || c.pending > surplus {
					continue
				}
				errs = append(errs, p.cancelOnce(ctx, ss, sched, j, "backlog gone"))
				surplus -= c.pending
			}
		}
	}
	ss.status.Live, ss.status.Pending = siteLive, sitePending
	return errors.Join(errs...)
}

// modulesOn returns the modules of a that name site.
func modulesOn(a *store.App, siteName string) []*store.Module {
	var out []*store.Module
	for _, m := range a.Modules {
		if m.Site == siteName {
			out = append(out, m)
		}
	}
	return out
}

// wanted is the number of pilots app a needs on the site: for each module,
// its waiting and leased tasks over the slots a pilot gives it.
func (p *Provisioner) wanted(ctx context.Context, spec *site.Spec, a *store.App, mods []*store.Module) (int, error) {
	counts, err := p.st.AppTaskCounts(ctx, a.ID)
	if err != nil {
		return 0, err
	}
	demand := map[int64]int64{}
	for _, c := range counts {
		if c.Status == store.StatusReady || c.Status == store.StatusQueued || c.Status == store.StatusRunning {
			demand[c.ModuleID] += c.Count
		}
	}
	want := int64(0)
	for _, m := range mods {
		slots := int64(1)
		if len(spec.Pilot.Slots) > 0 {
			slots = int64(spec.Pilot.Slots[m.Name])
			if slots == 0 {
				continue // the site's pilots do not serve this module
			}
		}
		want = max(want, (demand[m.ID]+slots-1)/slots)
	}
	want = max(want, int64(spec.Limits.MinPilots))
	if spec.Limits.MaxPilots > 0 {
		want = min(want, int64(spec.Limits.MaxPilots))
	}
	return int(want), nil
}

// jobCounts is the last known split of a job's pilots; before any status
// query, every pilot of an unfinished job counts as pending.
func (ss *siteState) jobCounts(j *store.PilotJob) jobCounts {
	if c, ok := ss.counts[j.ID]; ok {
		return c
	}
	return jobCounts{pending: j.Count}
}

// refresh asks the scheduler about every unfinished job in one call and
// records what changed. It returns the jobs still unfinished.
func (p *Provisioner) refresh(ctx context.Context, spec *site.Spec, ss *siteState, sched batch.Scheduler, jobs []*store.PilotJob) ([]*store.PilotJob, error) {
	now := p.cfg.Now()
	ids := make([]batch.JobID, 0, len(jobs))
	for _, j := range jobs {
		ids = append(ids, batch.JobID(j.JobID))
	}
	res, err := sched.Status(ctx, ids)
	ss.status.LastStatusAt = now
	if err != nil {
		ss.status.LastError = err.Error()
		ss.next = now.Add(ss.interval)
		return jobs, fmt.Errorf("status of %d pilot jobs: %w", len(ids), err)
	}
	var (
		updates []store.PilotJobUpdate
		active  []*store.PilotJob
	)
	for _, j := range jobs {
		js, ok := res[batch.JobID(j.JobID)]
		if !ok {
			js = batch.JobStatus{ID: batch.JobID(j.JobID), State: batch.Unknown, Native: "not reported"}
		}
		c := countPilots(j, js, res)
		ss.counts[j.ID] = c
		u := store.PilotJobUpdate{ID: j.ID, State: string(js.State), Native: js.Native, Reason: js.Reason,
			ExitCode: js.ExitCode, Final: js.State.Final(), At: now}
		if u.Final {
			delete(ss.counts, j.ID)
			delete(ss.cancels, j.ID)
			if msg, failed := p.startFailure(ctx, spec, j, js); failed {
				u.Reason = msg
				p.failed(ss, msg)
			}
		} else {
			active = append(active, j)
			if c.running > 0 {
				ss.status.Failures = 0 // pilots start again
			}
		}
		if u.State != j.State || u.Native != j.Native || u.Reason != j.Reason || u.Final != j.Final || !sameCode(u.ExitCode, j.ExitCode) {
			updates = append(updates, u)
			j.State, j.Native, j.Reason, j.ExitCode, j.Final = u.State, u.Native, u.Reason, u.ExitCode, u.Final
		}
	}
	if err := p.st.PilotJobUpdate(ctx, updates); err != nil {
		return jobs, err
	}
	// Adaptive: query again soon while jobs change, less often when they don't.
	if len(updates) > 0 {
		ss.interval = p.cfg.Interval
	} else {
		ss.interval = min(2*ss.interval, p.cfg.MaxInterval)
	}
	ss.next = now.Add(ss.interval)
	return active, nil
}

func sameCode(a, b *int) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// countPilots splits a job's pilots into pending and running, from its
// array tasks if the scheduler reported them, else from the job itself.
func countPilots(j *store.PilotJob, js batch.JobStatus, res map[batch.JobID]batch.JobStatus) jobCounts {
	var c jobCounts
	subs := 0
	for id, s := range res {
		if !isTaskOf(batch.JobID(j.JobID), id) {
			continue
		}
		subs++
		switch s.State {
		case batch.Pending:
			c.pending++
		case batch.Running:
			c.running++
		}
	}
	if subs == 0 {
		switch js.State {
		case batch.Pending:
			c.pending = j.Count
		case batch.Running:
			c.running = j.Count
		}
	} else if subs < j.Count && js.State == batch.Pending {
		// Slurm folds pending array tasks into one range record.
		c.pending += j.Count - subs
	}
	return c
}

// isTaskOf reports whether id is an array task of job: Slurm "123_4" of
// "123", PBS "123[4].server" of "123[].server".
func isTaskOf(job, id batch.JobID) bool {
	j, s := string(job), string(id)
	if pre, post, ok := strings.Cut(j, "[]"); ok {
		return strings.HasPrefix(s, pre+"[") && strings.HasSuffix(s, "]"+post) && s != j
	}
	return strings.HasPrefix(s, j+"_")
}

// startFailure reports whether a finished job failed before any of its
// pilots registered, and the message to show: the scheduler's reason and
// the tail of the job's output.
func (p *Provisioner) startFailure(ctx context.Context, spec *site.Spec, j *store.PilotJob, js batch.JobStatus) (string, bool) {
	if js.State != batch.Failed {
		return "", false
	}
	pilots, err := p.st.PilotList(ctx, store.PilotFilter{Site: spec.Name})
	if err != nil {
		return "", false
	}
	for _, pl := range pilots {
		if pl.JobID == j.JobID || isTaskOf(batch.JobID(j.JobID), batch.JobID(pl.JobID)) {
			return "", false
		}
	}
	var parts []string
	if js.Reason != "" && js.Reason != "None" {
		parts = append(parts, js.Reason)
	}
	if js.ExitCode != nil {
		parts = append(parts, "exit code "+strconv.Itoa(*js.ExitCode))
	}
	if tail := outputTail(p.logDir(spec), j.JobID, 600); tail != "" {
		parts = append(parts, "job output: "+tail)
	}
	msg := "pilot job " + j.JobID + " failed before any pilot started"
	if len(parts) > 0 {
		msg += ": " + strings.Join(parts, "; ")
	}
	return msg, true
}

// failed records a failed start and backs the site off.
func (p *Provisioner) failed(ss *siteState, msg string) {
	ss.status.Failures++
	ss.status.LastError = msg
	d := p.cfg.Backoff << min(ss.status.Failures-1, 20)
	if d <= 0 || d > p.cfg.MaxBackoff {
		d = p.cfg.MaxBackoff
	}
	ss.status.BackoffUntil = p.cfg.Now().Add(d)
	p.log.Warn("pilot start failed; backing off", zap.String("error", msg), zap.Duration("backoff", d))
}

func (p *Provisioner) logDir(spec *site.Spec) string { return filepath.Join(p.cfg.LogDir, spec.Name) }

// outputTail returns the last n bytes of the output files of a job in dir
// (files whose name holds the job's number), newlines folded.
func outputTail(dir, jobID string, n int) string {
	num := jobID
	if i := strings.IndexAny(num, "_[."); i >= 0 {
		num = num[:i]
	}
	if num == "" {
		return ""
	}
	re := regexp.MustCompile(`(^|[^0-9])` + regexp.QuoteMeta(num) + `($|[^0-9])`)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() || !re.MatchString(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > n {
			b = b[len(b)-n:]
		}
		text := strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", " | ")), " ")
		out = append(out, text)
	}
	return strings.Join(out, " || ")
}

// submit submits count pilots of app appID as one job (an array when
// count > 1) and records it; a refused submission is recorded too.
func (p *Provisioner) submit(ctx context.Context, spec *site.Spec, ss *siteState, sched batch.Scheduler, appID int64, count int) (*store.PilotJob, error) {
	js, err := spec.JobSpec(appID, count)
	if err != nil {
		return nil, err
	}
	if js.ExcludeHosts, err = p.quarantinedHosts(ctx, spec.Name); err != nil {
		return nil, err
	}
	dir := p.logDir(spec)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("pilot job output dir: %w", err)
	}
	js.WorkDir = dir
	if spec.Kind == "slurm" {
		js.Output = filepath.Join(dir, "%x-%j.out")
		if count > 1 {
			js.Output = filepath.Join(dir, "%x-%A_%a.out")
		}
	}
	now := p.cfg.Now()
	id, err := sched.Submit(ctx, js)
	if err != nil {
		msg := err.Error()
		var ce *batch.CommandError
		if errors.As(err, &ce) {
			msg = strings.TrimSpace(ce.Stderr)
			if msg == "" {
				msg = err.Error()
			}
		}
		rec, aerr := p.st.PilotJobAdd(ctx, &store.PilotJob{Site: spec.Name, AppID: appID, Count: count,
			State: store.PilotJobRefused, Reason: msg, Final: true, SubmittedAt: now})
		p.failed(ss, sched.Name()+" refused the pilot job: "+msg)
		if aerr != nil {
			return nil, errors.Join(err, aerr)
		}
		return rec, fmt.Errorf("submit %d pilots: %w", count, err)
	}
	rec, err := p.st.PilotJobAdd(ctx, &store.PilotJob{Site: spec.Name, AppID: appID, JobID: string(id), Count: count,
		State: string(batch.Pending), Native: "submitted", SubmittedAt: now})
	if err != nil {
		// The job runs without a record: cancel it rather than lose track.
		_ = sched.Cancel(context.WithoutCancel(ctx), id)
		return nil, fmt.Errorf("record pilot job %s: %w", id, err)
	}
	ss.counts[rec.ID] = jobCounts{pending: count}
	ss.next = now.Add(p.cfg.Interval) // look at the new job soon
	ss.interval = p.cfg.Interval
	p.log.Info("submitted pilots", zap.String("site", spec.Name), zap.Int64("app", appID), zap.Int("count", count),
		zap.String("job", string(id)))
	return rec, nil
}

// cancelOnce cancels a job's pilots once; its record follows the
// scheduler's next word.
func (p *Provisioner) cancelOnce(ctx context.Context, ss *siteState, sched batch.Scheduler, j *store.PilotJob, why string) error {
	if ss.cancels[j.ID] || j.JobID == "" {
		return nil
	}
	if err := sched.Cancel(ctx, batch.JobID(j.JobID)); err != nil {
		return fmt.Errorf("cancel pilot job %s: %w", j.JobID, err)
	}
	ss.cancels[j.ID] = true
	ss.next = p.cfg.Now() // see it end at the next cycle
	p.log.Info("cancelled pilot job", zap.String("job", j.JobID), zap.String("why", why))
	return nil
}

// Submit submits count pilots for app appID to a site now, through the
// same path as automatic submissions (`scalebox site submit`), regardless
// of the backlog and of a back-off.
func (p *Provisioner) Submit(ctx context.Context, siteName string, appID int64, count int) (*store.PilotJob, error) {
	if count < 1 {
		return nil, fmt.Errorf("count must be at least 1, not %d", count)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	spec, ss, sched, err := p.site(ctx, siteName)
	if err != nil {
		return nil, err
	}
	return p.submit(ctx, spec, ss, sched, appID, count)
}

// CancelJob cancels a pilot job by its record id and marks it cancelled.
func (p *Provisioner) CancelJob(ctx context.Context, id int64) (*store.PilotJob, error) {
	j, err := p.st.PilotJobGet(ctx, id)
	if err != nil {
		return nil, err
	}
	if j.Final {
		return j, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ss, sched, err := p.site(ctx, j.Site)
	if err != nil {
		return nil, err
	}
	if err := p.cancelOnce(ctx, ss, sched, j, "user"); err != nil {
		return nil, err
	}
	return j, nil
}

// CancelPilot cancels the batch job (the array task) a pilot runs in.
func (p *Provisioner) CancelPilot(ctx context.Context, pilotID int64) (*store.Pilot, error) {
	pl, err := p.st.PilotGet(ctx, pilotID)
	if err != nil {
		return nil, err
	}
	if pl.JobID == "" {
		return nil, fmt.Errorf("pilot %d has no batch job: %w", pilotID, ErrNotBatch)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ss, sched, err := p.site(ctx, pl.Site)
	if err != nil {
		return nil, err
	}
	if err := sched.Cancel(ctx, batch.JobID(pl.JobID)); err != nil {
		return nil, fmt.Errorf("cancel pilot %d (job %s): %w", pilotID, pl.JobID, err)
	}
	ss.next = time.Time{} // see it end at the next cycle
	return pl, nil
}

// Status returns the provisioner's view of a site (zero before its first cycle).
func (p *Provisioner) Status(siteName string) SiteStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ss := p.sites[siteName]; ss != nil {
		return ss.status
	}
	return SiteStatus{}
}

// site loads a batch site, its state and its scheduler; the caller holds p.mu.
func (p *Provisioner) site(ctx context.Context, name string) (*site.Spec, *siteState, batch.Scheduler, error) {
	s, err := p.st.SiteGet(ctx, name)
	if err != nil {
		return nil, nil, nil, err
	}
	spec, err := decodeSite(s)
	if err != nil {
		return nil, nil, nil, err
	}
	if spec.Kind != "slurm" && spec.Kind != "pbs" {
		return nil, nil, nil, fmt.Errorf("site %s is %q: %w", name, spec.Kind, ErrNotBatch)
	}
	ss := p.state(name)
	sched, err := p.scheduler(ss, spec)
	return spec, ss, sched, err
}

// quarantinedHosts are the hosts of the site's quarantined pilots (black
// holes), left out of its later pilot jobs. PBS cannot express that in a
// job script; Slurm gets --exclude.
func (p *Provisioner) quarantinedHosts(ctx context.Context, site string) ([]string, error) {
	ps, err := p.st.PilotList(ctx, store.PilotFilter{Site: site, Status: store.PilotQuarantined})
	if err != nil {
		return nil, fmt.Errorf("quarantined pilots of site %s: %w", site, err)
	}
	var hosts []string
	for _, pl := range ps {
		if pl.Host != "" && !slices.Contains(hosts, pl.Host) {
			hosts = append(hosts, pl.Host)
		}
	}
	slices.Sort(hosts)
	return hosts, nil
}
