// Package pilot is Scalebox's agent: a long-running process (a batch job, a
// cloud VM, a login-node helper) that registers with the broker, long-polls
// for tasks of the modules it serves, runs each in its own work dir through
// a runtime, reports results in batches and heartbeats its leases.
//
// The pilot opens outbound HTTP only. It never imports the store, so it
// stays one small static binary.
//
//	register ─► lease (long-poll) ─► queue ─► slot workers ─► reporter ─► complete
//	                 ▲                              │
//	                 └──── free slots ◄─────────────┘      heartbeat: renew leases, stop stale attempts
package pilot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

// Config describes a pilot.
type Config struct {
	Broker   string         // broker address
	Token    string         // pilot token ("" when the broker runs without auth)
	Site     string         // default "local"
	Host     string         // default os.Hostname()
	IP       string         // default: the address used to reach the broker
	AppID    int64          // serve this app's modules
	Slots    map[string]int // module name → parallel slots (with AppID); empty: every module, Cores slots in all
	Cores    int            // default: number of CPUs
	Prefetch int            // tasks leased ahead per module beyond the free slots (0: adaptive, see module.prefetch)
	Scratch  string         // parent of the per-attempt work dirs
	Keep     bool           // keep work dirs of failed attempts
	MaxIdle  time.Duration  // exit after this long with nothing to do (0: never)
	Grace    time.Duration  // on stop, how long running tasks may finish before they are killed and handed back (default 30 s)
	// ReportFlush is how long a stopping pilot keeps trying to deliver
	// results the broker could not take; then they stay in the node's spool
	// for the next pilot there (default 30 s).
	ReportFlush time.Duration
	Deadline    time.Time        // walltime end, if known: stop taking work Grace before it
	JobID       string           // batch job id, if any
	Runtime     executor.Runtime // of modules on the host (default executor.Host)
	// Container says how modules with a base_image run (default: on the host).
	Container ContainerConfig
	Log       *zap.Logger
	// CLIPath is the scalebox binary put on the tasks' PATH (default: this executable).
	CLIPath string
}

func (c *Config) setDefaults() error {
	if c.Broker == "" {
		return errors.New("no broker address")
	}
	if c.Site == "" {
		c.Site = "local"
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("host name: %w", err)
		}
		c.Host = h
	}
	if c.Cores <= 0 {
		c.Cores = numCPU()
	}
	if c.Grace <= 0 {
		c.Grace = 30 * time.Second
	}
	if c.ReportFlush <= 0 {
		c.ReportFlush = 30 * time.Second
	}
	if c.Scratch == "" {
		c.Scratch = DefaultScratch()
	}
	if c.Runtime == nil {
		c.Runtime = executor.Host{}
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	if c.CLIPath == "" {
		if exe, err := os.Executable(); err == nil {
			c.CLIPath = exe
		}
	}
	if c.AppID == 0 {
		return errors.New("no app: a pilot serves the modules of one app (give the app id)")
	}
	for m, n := range c.Slots {
		if n <= 0 {
			return fmt.Errorf("module %s: slots must be positive, got %d", m, n)
		}
	}
	return nil
}

// DefaultScratch is $SLURM_TMPDIR, else $TMPDIR, else /tmp.
func DefaultScratch() string {
	for _, v := range []string{"SLURM_TMPDIR", "TMPDIR"} {
		if d := os.Getenv(v); d != "" {
			return d
		}
	}
	return os.TempDir()
}

// Pilot is a running agent.
type Pilot struct {
	cfg        Config
	client     *api.Client
	log        *zap.Logger
	id         atomic.Int64 // the broker's id of this pilot; a new one after it re-attaches
	reg        *api.PilotRegistration
	regMu      sync.Mutex // one re-attachment at a time
	hb         time.Duration
	dir        string // this pilot's scratch root
	runPath    string // its sockets (runDir)
	mainRouter string
	onlySite   string   // Config.Site as given: without Slots, serve only this site's modules (and site-less ones)
	hosts      []string // names this host answers to, for HOST-BOUND tasks
	abort      context.CancelCauseFunc

	mu       sync.Mutex
	modules  map[int64]*module // by module id
	running  map[int64]*attempt
	held     map[int64]int // task → attempt of every lease this pilot holds: queued, running, or done and not yet reported
	free     map[int64]int // free slots per module id
	queued   map[int64]int // leased, not yet started, per module id
	lastBusy time.Time

	results  chan *api.Result
	spool    *spool // results the broker could not take yet, on disk
	proxy    *proxy
	ctr      *containers // nil: every module runs on the host
	boxSeq   atomic.Int64
	data     localData
	draining atomic.Bool
	stopped  <-chan struct{} // closed when the pilot is told to stop (its context ends)
	stats    Stats
}

// Stats counts what a pilot did.
type Stats struct {
	Leased, Succeeded, Failed, Fenced atomic.Int64
}

// module is what the pilot knows of a module it serves.
type module struct {
	id    int64
	appID int64
	name  string
	spec  *appspec.Module
	slots int
	queue chan *api.LeasedTask
	wake  chan struct{} // a slot of this module was freed

	runtimes runtimes // recent task durations, for walltime-aware leasing
	slotTime slotTime // how long a slot spends per task, for the adaptive prefetch

	checkOnce sync.Once
	setUp     chan struct{} // closed once a slot has run setup.sh (or found it cannot yet): check.sh waits for it
	setUpOnce sync.Once
	check     *slotRun    // where check.sh runs
	hasCheck  bool        // the module has a check.sh (or ACTION_CHECK)
	space     *spaceCheck // free_space_gb / dir_quota_gb; nil without
	spaceErr  error       // those arguments could not be read
}

// attempt is a task running on this pilot.
type attempt struct {
	task    *api.LeasedTask
	mod     *module
	cancel  context.CancelCauseFunc
	started atomic.Bool
	secret  string // per-attempt token for in-task commands

	mu       sync.Mutex
	messages []api.Message // from `scalebox task add` inside the task
}

var errStale = errors.New("lease lost: the broker gave this task to someone else")

// Run registers the pilot and serves until ctx ends (then drains), the
// broker asks it to drain, or it has been idle for MaxIdle.
func Run(ctx context.Context, cfg Config) (*Stats, error) {
	onlySite := cfg.Site
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p := &Pilot{
		onlySite: onlySite,
		cfg:      cfg,
		client:   api.NewClient(cfg.Broker, cfg.Token),
		log:      cfg.Log,
		modules:  map[int64]*module{},
		running:  map[int64]*attempt{},
		held:     map[int64]int{},
		free:     map[int64]int{},
		queued:   map[int64]int{},
		results:  make(chan *api.Result, 1024),
	}
	return &p.stats, p.run(ctx)
}

func (p *Pilot) run(ctx context.Context) error {
	if p.cfg.IP == "" {
		p.cfg.IP = outboundIP(p.cfg.Broker)
	}
	reg := &api.PilotRegistration{Site: p.cfg.Site, Host: p.cfg.Host, IP: p.cfg.IP, Cores: p.cfg.Cores,
		Slots: p.cfg.Slots, JobID: p.cfg.JobID, Version: Version, MemoryMB: memoryMB()}
	if !p.cfg.Deadline.IsZero() {
		d := p.cfg.Deadline
		reg.Deadline = &d
	}
	r, err := p.client.PilotRegister(ctx, reg)
	if err != nil {
		return fmt.Errorf("register with %s: %w", p.cfg.Broker, err)
	}
	p.reg = reg
	p.id.Store(r.Pilot.ID)
	p.hb = time.Duration(r.HeartbeatSeconds * float64(time.Second))
	if p.hb <= 0 {
		p.hb = 10 * time.Second
	}
	p.log = p.log.With(zap.Int64("pilot", r.Pilot.ID))
	p.hosts = []string{p.cfg.Host}
	if p.cfg.IP != "" {
		p.hosts = append(p.hosts, p.cfg.IP)
	}
	if short, _, ok := strings.Cut(p.cfg.Host, "."); ok {
		p.hosts = append(p.hosts, short)
	}
	if err := p.prepareScratch(); err != nil {
		return err
	}
	defer os.RemoveAll(p.dir)
	if p.spool, err = openSpool(filepath.Join(p.cfg.Scratch, "scalebox", "spool"), p.cfg.Broker); err != nil {
		return err
	}
	defer func() {
		if left := p.spool.close(); left > 0 {
			p.log.Warn("spooled results left for the next pilot on this node", zap.Int("batches", left), zap.String("dir", p.spool.dir))
		}
	}()
	if err := p.makeRunDir(); err != nil {
		return err
	}
	defer os.RemoveAll(p.runPath)
	if err := p.loadModules(ctx); err != nil {
		return err
	}
	if err := p.setupContainers(ctx); err != nil {
		return err
	}
	p.proxy, err = startProxy(p)
	if err != nil {
		return err
	}
	defer p.proxy.close()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		p.releaseData(dctx)
	}()
	p.log.Info("pilot started", zap.String("host", p.cfg.Host), zap.String("site", p.cfg.Site),
		zap.String("scratch", p.dir), zap.Int("modules", len(p.modules)))

	p.stopped = ctx.Done()
	// Work contexts outlive ctx by the grace period; leasing stops at once.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	leaseCtx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	p.abort = abort
	stopLeasing := func() { abort(nil) }
	if !p.cfg.Deadline.IsZero() {
		var cancel context.CancelFunc
		leaseCtx, cancel = context.WithDeadline(leaseCtx, p.cfg.Deadline.Add(-p.cfg.Grace))
		defer cancel()
	}

	var workers sync.WaitGroup
	p.mu.Lock()
	for _, m := range p.modules {
		for s := 0; s < m.slots; s++ {
			workers.Add(1)
			go func(m *module, slot int) {
				defer workers.Done()
				p.worker(workCtx, m, slot)
			}(m, s)
		}
	}
	p.lastBusy = time.Now()
	p.mu.Unlock()

	reportDone := make(chan struct{})
	go func() { defer close(reportDone); p.reporter() }()
	orphansDone := make(chan struct{})
	go func() { defer close(orphansDone); p.deliverOrphans(workCtx) }()
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); p.heartbeater(hbCtx, stopLeasing) }()

	leaseErr := p.leaser(leaseCtx)
	if cause := context.Cause(leaseCtx); leaseErr == nil && cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, context.DeadlineExceeded) {
		leaseErr = cause
	}
	stopLeasing()
	// Drain: close the queues; queued-but-unstarted tasks are handed back
	// at deregistration (draining keeps the workers from starting them).
	// Running tasks get the grace period.
	p.draining.Store(true)
	p.mu.Lock()
	for _, m := range p.modules {
		close(m.queue)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.cfg.Grace):
		p.log.Warn("grace period over: stopping running tasks", zap.Duration("grace", p.cfg.Grace))
		cancelWork()
		<-done
	}
	close(p.results)
	<-reportDone
	cancelWork()
	<-orphansDone
	stopHB()
	<-hbDone
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.client.Deregister(dctx, p.id.Load()); err != nil {
		p.log.Warn("deregister", zap.Error(err))
	}
	p.log.Info("pilot stopped", zap.Int64("succeeded", p.stats.Succeeded.Load()), zap.Int64("failed", p.stats.Failed.Load()))
	if leaseErr != nil && !errors.Is(leaseErr, context.Canceled) && !errors.Is(leaseErr, context.DeadlineExceeded) {
		return leaseErr
	}
	return nil
}

// prepareScratch creates this pilot's scratch root and sweeps the roots of
// earlier pilots on this node that are gone.
func (p *Pilot) prepareScratch() error {
	root := filepath.Join(p.cfg.Scratch, "scalebox")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	sweepOrphans(root, p.log)
	dir, err := os.MkdirTemp(root, fmt.Sprintf("pilot-%d-pid%d-", p.id.Load(), os.Getpid()))
	if err != nil {
		return fmt.Errorf("create scratch dir: %w", err)
	}
	p.dir = dir
	return nil
}

// loadModules fetches the definitions of the modules this pilot serves.
func (p *Pilot) loadModules(ctx context.Context) error {
	a, err := p.client.AppGet(ctx, p.cfg.AppID)
	if err != nil {
		return fmt.Errorf("load app %d: %w", p.cfg.AppID, err)
	}
	var spec appspec.App
	if err := json.Unmarshal(a.Spec, &spec); err != nil {
		return fmt.Errorf("app %d: decode definition: %w", a.ID, err)
	}
	p.mainRouter = spec.MainRouter
	known := map[string]bool{}
	for _, m := range a.Modules {
		known[m.Name] = true
		slots := p.cfg.Slots[m.Name]
		if len(p.cfg.Slots) == 0 {
			slots = 1
			if p.onlySite != "" && m.Site != "" && m.Site != p.onlySite {
				slots = 0 // another site's module
			}
		}
		if slots == 0 {
			continue
		}
		if err := p.addModule(a.ID, m, slots); err != nil {
			return err
		}
	}
	for name := range p.cfg.Slots {
		if !known[name] {
			return fmt.Errorf("app %d has no module %q", p.cfg.AppID, name)
		}
	}
	if len(p.modules) == 0 {
		if p.onlySite != "" && len(p.cfg.Slots) == 0 {
			return fmt.Errorf("app %d: no module runs on site %s", p.cfg.AppID, p.onlySite)
		}
		return fmt.Errorf("app %d: no module to serve", p.cfg.AppID)
	}
	return nil
}

func (p *Pilot) addModule(appID int64, m api.Module, slots int) error {
	var spec appspec.Module
	if err := json.Unmarshal(m.Spec, &spec); err != nil {
		return fmt.Errorf("module %s: decode definition: %w", m.Name, err)
	}
	mod := &module{id: m.ID, appID: appID, name: m.Name, spec: &spec, slots: slots, setUp: make(chan struct{}),
		queue: make(chan *api.LeasedTask, 2*slots+max(p.cfg.Prefetch, maxPrefetch(slots))+2*max(1, spec.TaskBatchSize)*slots),
		wake:  make(chan struct{}, 1)}
	p.mu.Lock()
	p.modules[m.ID] = mod
	p.free[m.ID] = slots
	p.mu.Unlock()
	return nil
}

// leaser runs one long-poll loop per module, so that a module whose slots
// are all busy never holds up the leasing of another.
func (p *Pilot) leaser(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p.mu.Lock()
	mods := make([]*module, 0, len(p.modules))
	for _, m := range p.modules {
		mods = append(mods, m)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.leaseModule(ctx, m); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// leaseModule long-polls for as many tasks of one module as it has free
// slots (plus the prefetch) and queues them for the module's workers.
func (p *Pilot) leaseModule(ctx context.Context, m *module) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil && !p.draining.Load() {
		if p.idleTooLong() {
			p.log.Info("idle for too long: stopping", zap.Duration("max_idle", p.cfg.MaxIdle))
			return nil
		}
		req := p.leaseRequest(m)
		if req != nil && !p.admitted(ctx, m) {
			select { // check.sh said no: ask again after the poll interval
			case <-ctx.Done():
			case <-time.After(m.pollInterval()):
			}
			continue
		}
		if req == nil {
			select { // every slot busy: wait for one to free
			case <-ctx.Done():
			case <-m.wake:
			case <-time.After(p.hb):
			}
			continue
		}
		id := p.id.Load()
		res, err := p.client.Lease(ctx, id, req)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if api.IsCode(err, api.CodeConflict) {
				// Lost (silent past its lease: stopped, cut off) or gone.
				if rerr := p.reattachIfLost(ctx, id); rerr != nil {
					return fmt.Errorf("lease: %w", err)
				}
				continue
			}
			if api.IsCode(err, api.CodeForbidden) || api.IsCode(err, api.CodeNotFound) {
				return fmt.Errorf("lease: %w", err)
			}
			p.log.Warn("lease failed; retrying", zap.Error(err), zap.Duration("in", backoff))
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if len(res.Tasks) == 0 {
			continue
		}
		p.log.Debug("leased", zap.String("module", m.name), zap.Int("tasks", len(res.Tasks)))
		p.stats.Leased.Add(int64(len(res.Tasks)))
		p.mu.Lock()
		p.queued[m.id] += len(res.Tasks)
		p.lastBusy = time.Now()
		for _, t := range res.Tasks {
			p.held[t.TaskID] = t.Attempt
		}
		p.mu.Unlock()
		for i := range res.Tasks {
			m.queue <- &res.Tasks[i]
		}
	}
	return nil
}

// admitted runs the module's admission before a lease: its storage rules
// (free_space_gb, dir_quota_gb) and its check.sh (Scalebox's custom
// admission); a refusal means "not now".
func (p *Pilot) admitted(ctx context.Context, m *module) bool {
	m.checkOnce.Do(func() { p.prepareCheck(m) })
	if m.spaceErr != nil {
		p.log.Error("module storage rules", zap.String("module", m.name), zap.Error(m.spaceErr))
		return false
	}
	if m.space != nil {
		if why := m.space.admit(m.pollInterval()); why != "" {
			p.log.Debug("storage admission refused work", zap.String("module", m.name), zap.String("why", why))
			return false
		}
	}
	if !m.hasCheck {
		return true // most modules have no check.sh: no work before each lease
	}
	select { // Scalebox: setup.sh before the first check.sh
	case <-m.setUp:
	case <-ctx.Done():
		return false
	}
	if err := p.hook(ctx, m.check, "check"); err != nil {
		p.log.Debug("check.sh refused work", zap.String("module", m.name), zap.Error(err))
		return false
	}
	return true
}

// prepareCheck sets up a module's admission once: check.sh runs in a dir
// of its own (in a container of its own, started per check, for a module
// with an image).
func (p *Pilot) prepareCheck(m *module) {
	sr, err := p.newSlotRun(m, 0, filepath.Join(p.dir, "check-"+safeName(m.name)), container.PerTask)
	if err != nil {
		p.log.Error("create check dir", zap.Error(err))
	}
	m.check, m.hasCheck = sr, p.script(sr, "check") != ""
	free, err := parseSpaceRules("free_space_gb", m.spec.Arguments["free_space_gb"])
	if err != nil {
		m.spaceErr = err
		return
	}
	quota, err := parseSpaceRules("dir_quota_gb", m.spec.Arguments["dir_quota_gb"])
	if err != nil {
		m.spaceErr = err
		return
	}
	if len(free)+len(quota) > 0 {
		m.space = &spaceCheck{free: free, quota: quota, hostPath: p.hostPathFunc(m, sr.dir)}
	}
}

// pollInterval is Scalebox's poll_interval_seconds (default 6 s).
func (m *module) pollInterval() time.Duration {
	if v, err := strconv.ParseFloat(m.spec.Arguments["poll_interval_seconds"], 64); err == nil && v > 0 {
		return time.Duration(v * float64(time.Second))
	}
	return 6 * time.Second
}

func (p *Pilot) idleTooLong() bool {
	if p.cfg.MaxIdle <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	busy := len(p.running) > 0
	for _, n := range p.queued {
		busy = busy || n > 0
	}
	if busy {
		p.lastBusy = time.Now()
		return false
	}
	return time.Since(p.lastBusy) >= p.cfg.MaxIdle
}

// leaseRequest asks for work for a module with room; nil if it has none.
func (p *Pilot) leaseRequest(m *module) *api.LeaseRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	wait := 30.0
	if p.cfg.MaxIdle > 0 {
		wait = min(wait, p.cfg.MaxIdle.Seconds())
	}
	prefetch := p.cfg.Prefetch
	if prefetch <= 0 {
		prefetch = m.prefetch()
	}
	room := p.free[m.id] + prefetch - p.queued[m.id]
	if b := m.spec.TaskBatchSize; b > 1 {
		// Whole batches: a batch for each free slot and one queued for each
		// slot, so that a slot never runs a remnant while the backlog lasts.
		room = (p.free[m.id]+m.slots)*b - p.queued[m.id]
	}
	if room <= 0 || !p.fitsBeforeDeadline(m) {
		return nil
	}
	if p.queued[m.id] > 0 && room < (prefetch+1)/2 {
		// Tasks are still queued: refill once half the prefetch is used
		// (a low-water mark), so short tasks come in batches of half the
		// prefetch, not one lease request for each task that finished.
		return nil
	}
	return &api.LeaseRequest{Slots: []api.SlotRequest{{ModuleID: m.id, Max: room}}, Hosts: p.hosts, WaitSeconds: wait}
}

// heartbeater renews leases, reports started attempts and stops attempts
// whose leases the broker gave away. If the broker stays unreachable for
// longer than a lease, the pilot stops its tasks: they belong to someone
// else by now.
func (p *Pilot) heartbeater(ctx context.Context, stopLeasing func()) {
	t := time.NewTicker(p.hb)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		// Reconcile: the broker renews only what this pilot holds, so a
		// lease whose grant was lost on the way runs out.
		req := &api.HeartbeatRequest{Reconcile: true}
		for _, a := range p.running {
			if a.started.Load() {
				req.Running = append(req.Running, api.TaskAttempt{TaskID: a.task.TaskID, Attempt: a.task.Attempt})
			}
		}
		for id, att := range p.held {
			if a := p.running[id]; a == nil || !a.started.Load() {
				req.Held = append(req.Held, api.TaskAttempt{TaskID: id, Attempt: att})
			}
		}
		p.mu.Unlock()
		id := p.id.Load()
		res, err := p.client.Heartbeat(ctx, id, req)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.log.Warn("heartbeat failed", zap.Error(err), zap.Duration("since_ok", time.Since(lastOK)))
			if time.Since(lastOK) > 3*p.hb {
				p.stopAll(errStale)
			}
			continue
		}
		lastOK = time.Now()
		for _, s := range res.Stale {
			p.stop(s.TaskID, s.Attempt, errStale)
		}
		if (res.Status == "DRAINING" || res.Status == "QUARANTINED") && !p.draining.Swap(true) {
			p.log.Info("broker asked this pilot to drain", zap.String("status", res.Status))
			stopLeasing()
		}
		switch res.Status {
		case "LOST":
			if err := p.reattach(ctx, id); err != nil {
				p.log.Warn("register again", zap.Error(err))
			}
		case "GONE":
			p.stopAll(errStale)
			stopLeasing()
		}
	}
}

// reattachIfLost asks the broker whether this pilot (as id) was declared
// lost, and if so registers it again; any other answer is an error.
func (p *Pilot) reattachIfLost(ctx context.Context, id int64) error {
	if p.id.Load() != id {
		return nil // re-attached meanwhile
	}
	res, err := p.client.Heartbeat(ctx, id, &api.HeartbeatRequest{})
	if err != nil {
		return err
	}
	if res.Status != "LOST" {
		return fmt.Errorf("pilot %d is %s", id, res.Status)
	}
	return p.reattach(ctx, id)
}

// reattach registers the pilot again after the broker declared it lost
// (it was silent past its lease: stopped, or cut off from the broker).
// Its tasks went back to the queue and belong to others now, so it stops
// them; the pilot itself, and its allocation, carry on under a new id.
func (p *Pilot) reattach(ctx context.Context, lostID int64) error {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	if p.id.Load() != lostID {
		return nil // done by another loop
	}
	p.stopAll(errStale)
	p.mu.Lock()
	clear(p.held) // every lease of the lost pilot is gone: queued tasks are not run
	p.mu.Unlock()
	r, err := p.client.PilotRegister(ctx, p.reg)
	if err != nil {
		return err
	}
	p.id.Store(r.Pilot.ID)
	p.log.Warn("the broker declared this pilot lost: registered again", zap.Int64("lost_id", lostID), zap.Int64("new_id", r.Pilot.ID))
	return nil
}

func (p *Pilot) stop(taskID int64, att int, cause error) {
	p.mu.Lock()
	a := p.running[taskID]
	p.mu.Unlock()
	if a != nil && a.task.Attempt == att {
		p.log.Warn("stopping attempt", zap.Int64("task", taskID), zap.Int("attempt", att), zap.Error(cause))
		a.cancel(cause)
	}
}

func (p *Pilot) stopAll(cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.running {
		a.cancel(cause)
	}
}

// reporter sends results in batches: whatever accumulated while the
// previous batch was in flight goes in the next, so an idle pilot reports
// at once and a busy one in large batches. A batch the broker cannot take
// goes to the spool on disk, and so does every later batch until the
// spool is delivered, oldest first. Once the pilot stops (p.results is
// closed), it keeps trying for cfg.ReportFlush, then leaves what is left on
// disk for the next pilot on this node.
func (p *Pilot) reporter() {
	var (
		backlog  []*spoolBatch // not delivered yet, oldest first
		retry    = time.NewTimer(time.Hour)
		backoff  time.Duration
		results  = p.results
		deadline <-chan time.Time
		lastSent time.Time // when the last report went
		lastSize int       // and how many results it carried
	)
	retry.Stop()
	defer retry.Stop()
	keep := func(batch []api.Result) {
		b, err := p.spool.put(p.id.Load(), batch)
		if err != nil {
			p.log.Error("results kept in memory only", zap.Error(err), zap.Int("results", len(batch)))
		}
		backlog = append(backlog, b)
	}
	for results != nil || len(backlog) > 0 {
		if len(backlog) == 0 {
			var until time.Time // results come in a stream: gather them
			if lastSize > 1 {
				until = lastSent.Add(reportEvery)
			}
			batch, ok := p.nextBatch(results, until)
			if !ok {
				return
			}
			lastSent, lastSize = time.Now(), len(batch)
			if err := p.deliver(context.Background(), p.id.Load(), batch, false); err != nil && !errors.Is(err, errRefused) {
				p.log.Warn("report failed; results spooled to disk until the broker takes them", zap.Error(err), zap.Int("results", len(batch)))
				keep(batch)
				backoff = 100 * time.Millisecond
				retry.Reset(backoff)
				continue
			}
			p.unholdResults(batch)
			continue
		}
		select {
		case r, ok := <-results:
			if !ok {
				results = nil
				deadline = time.After(p.cfg.ReportFlush)
				continue
			}
			batch, _ := p.nextBatch(results, time.Time{}, r)
			keep(batch)
		case <-retry.C:
			b := backlog[0]
			if err := p.deliver(context.Background(), b.PilotID, b.Results, false); err != nil && !errors.Is(err, errRefused) {
				backoff = min(backoff*2, 10*time.Second)
				p.log.Warn("report failed; retrying", zap.Error(err), zap.Duration("in", backoff), zap.Int("spooled_batches", len(backlog)))
				retry.Reset(backoff)
				continue
			}
			p.spool.done(b)
			p.unholdResults(b.Results)
			backlog[0] = nil
			backlog = backlog[1:]
			retry.Reset(0)
		case <-deadline:
			n, lost := 0, 0
			for _, b := range backlog {
				if b.path == "" {
					lost += len(b.Results)
				}
				n += len(b.Results)
			}
			p.log.Warn("broker unreachable at stop: results left in the node's spool for the next pilot here",
				zap.Int("results", n), zap.String("dir", p.spool.dir))
			if lost > 0 {
				p.log.Error("results that could not be written to the spool are lost; their tasks will run again", zap.Int("results", lost))
			}
			return
		}
	}
}

// reportEvery is the shortest interval between two reports of a pilot
// whose results come in a stream (its last report carried more than one):
// results that come faster wait for the next report, up to that long, so
// that a stream of short tasks is reported in batches (fewer requests and
// broker transactions per task). A result that comes alone (after a quiet
// spell, or one step of a chain of tasks that each wait for the one
// before) goes at once, and so does a batch once no other task of the
// pilot is left to finish.
const reportEvery = 50 * time.Millisecond

// nextBatch gathers up to 512 results: first (if given), else one waited
// for, then, until the time until and while the pilot holds tasks whose
// results are still to come, whatever comes; then whatever is already
// queued. ok is false when results is closed and empty.
func (p *Pilot) nextBatch(results <-chan *api.Result, until time.Time, first ...*api.Result) (batch []api.Result, ok bool) {
	const maxBatch = 512
	if len(first) == 0 {
		r, ok := <-results
		if !ok {
			return nil, false
		}
		first = append(first, r)
	}
	batch = append(make([]api.Result, 0, 16), *first[0])
	var linger <-chan time.Time
	if d := time.Until(until); d > 0 && p.awaiting(len(batch)) {
		t := time.NewTimer(d)
		defer t.Stop()
		linger = t.C
	}
	for len(batch) < maxBatch {
		var r *api.Result
		select {
		case r, ok = <-results:
		default: // nothing queued: wait only while lingering and more can come
			if linger == nil || !p.awaiting(len(batch)) {
				return batch, true
			}
			select {
			case r, ok = <-results:
			case <-linger:
				linger = nil
				continue
			}
		}
		if !ok {
			return batch, true
		}
		batch = append(batch, *r)
	}
	return batch, true
}

// deliver sends a batch of results under pilotID (this pilot's, or a gone
// pilot's for spooled results). With retry it retries until ctx ends. A
// 4xx answer is errRefused: the results are logged and given up.
func (p *Pilot) deliver(ctx context.Context, pilotID int64, batch []api.Result, retry bool) error {
	backoff := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		res, err := p.client.Complete(rctx, pilotID, &api.CompleteRequest{Results: batch})
		cancel()
		if err == nil {
			for _, r := range res.Results {
				if !r.Applied {
					p.stats.Fenced.Add(1)
					p.log.Warn("result fenced: the lease was no longer ours", zap.Int64("task", r.TaskID))
				} else if r.Error != "" {
					p.log.Warn("messages rejected", zap.Int64("task", r.TaskID), zap.String("error", r.Error))
				}
			}
			return nil
		}
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
			p.log.Error("broker refused results; dropping them", zap.Error(err), zap.Int("results", len(batch)))
			return fmt.Errorf("%w: %w", errRefused, err)
		}
		if !retry {
			return err
		}
		p.log.Warn("report failed; retrying", zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// unholdResults forgets the leases of reported results.
func (p *Pilot) unholdResults(batch []api.Result) {
	tas := make([]api.TaskAttempt, len(batch))
	for i, r := range batch {
		tas[i] = api.TaskAttempt{TaskID: r.TaskID, Attempt: r.Attempt}
	}
	p.unhold(tas...)
}

// awaiting says whether the pilot holds leases whose results are still to
// come, beyond the n results gathered for a report: held are all the
// leases queued, running or done and not reported yet.
func (p *Pilot) awaiting(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held) > n
}

// unhold forgets leases: their results were reported, or they are lost.
func (p *Pilot) unhold(tas ...api.TaskAttempt) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ta := range tas {
		if p.held[ta.TaskID] == ta.Attempt {
			delete(p.held, ta.TaskID)
		}
	}
}

// outboundIP is the local address used to reach the broker.
func outboundIP(broker string) string {
	host := strings.TrimPrefix(strings.TrimPrefix(broker, "http://"), "https://")
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host = host[:i]
	}
	c, err := net.DialTimeout("udp", host, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// Version is set at build time.
var Version = "dev"
