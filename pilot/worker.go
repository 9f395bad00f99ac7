package pilot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
	"github.com/scalebox-hpc/scalebox/pilot/workdir"
)

// Exit codes the pilot reports when the program could not run at all.
const (
	codeNoProgram   = -110 // Scalebox: run program missing
	codeNotRunnable = -111 // Scalebox: run program not runnable (its container could not start)
	codeTimeout     = 124
	errStopping     = stopCause("pilot stopping")
	defaultTextCap  = 65535
)

type stopCause string

func (s stopCause) Error() string { return string(s) }

// worker is one slot of a module: it runs the module's tasks one at a time
// (or one batch at a time with task_batch_size > 1).
func (p *Pilot) worker(ctx context.Context, m *module, slot int) {
	slotDir := filepath.Join(p.dir, fmt.Sprintf("slot-%s-%d", safeName(m.name), slot))
	sr, err := p.newSlotRun(m, slot, slotDir, "")
	if err != nil {
		p.log.Error("create slot dir", zap.Error(err))
	}
	if sr.box != nil {
		defer sr.box.close()
	}
	// A container that cannot be prepared yet (image, binds) fails the
	// slot's attempts with a clear error, not the pilot; setup then runs
	// before the first attempt that finds it ready.
	setupDone := false
	setUp := func() { m.setUpOnce.Do(func() { close(m.setUp) }) }
	defer setUp()
	setup := func() bool {
		if setupDone {
			return true
		}
		if sr.box != nil {
			if _, err := sr.box.ensure(ctx); err != nil {
				p.log.Warn("slot container not ready", zap.String("module", m.name), zap.Int("slot", slot), zap.Error(err))
				setUp() // the attempts report the error; check.sh need not wait
				return true
			}
		}
		setupDone = true
		defer setUp()
		if err := p.hook(ctx, sr, "setup"); err != nil {
			// Scalebox: a failed setup puts the slot in ERROR. Here the whole
			// pilot stops taking work (the node is likely broken) and hands its
			// leases back; nothing is counted against the tasks.
			p.abort(err)
			return false
		}
		return true
	}
	if !setup() {
		for range m.queue { // drain: queued tasks are handed back at deregistration
			p.mu.Lock()
			p.queued[m.id]--
			p.mu.Unlock()
		}
		return
	}
	defer func() {
		if !setupDone {
			return
		}
		if err := p.hook(context.WithoutCancel(ctx), sr, "teardown"); err != nil {
			p.log.Error("teardown failed", zap.Error(err))
		}
	}()
	for t := range m.queue {
		batch := []*api.LeasedTask{t}
		for n := m.spec.TaskBatchSize; len(batch) < n; {
			select {
			case t2, ok := <-m.queue:
				if ok {
					batch = append(batch, t2)
					continue
				}
			default:
			}
			break
		}
		p.mu.Lock()
		p.queued[m.id] -= len(batch)
		p.free[m.id]--
		batch = p.stillHeldLocked(batch)
		p.mu.Unlock()
		if len(batch) > 0 && ctx.Err() == nil && !p.stopping() && setup() {
			t0 := time.Now()
			p.execute(ctx, sr, batch)
			m.slotTime.add(time.Since(t0) / time.Duration(len(batch)))
		}
		// else: not started; handed back when the pilot deregisters.
		p.mu.Lock()
		p.free[m.id]++
		p.lastBusy = time.Now()
		p.mu.Unlock()
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

// slotRun is what a slot (or a module's check) runs with.
type slotRun struct {
	m       *module
	slot    int
	dir     string   // the work dir on the host
	workDir string   // WORK_DIR as the program sees it (/work in a container)
	env     []string // the slot's environment, built once; each attempt adds its own
	// attemptEnv is env without the per-attempt variables, except those
	// the module sets itself (moduleSets): taskEnv appends the rest.
	attemptEnv []string
	moduleSets map[string]bool
	rt         executor.Runtime
	box        *boxSlot // the slot's container; nil on the host
}

// newSlotRun prepares a slot's work dir, runtime and environment. mode ""
// is the configured container mode.
func (p *Pilot) newSlotRun(m *module, slot int, dir string, mode container.Mode) (*slotRun, error) {
	sr := &slotRun{m: m, slot: slot, dir: dir, workDir: dir, rt: p.cfg.Runtime}
	if p.boxed(m) {
		if mode == "" {
			mode = p.ctr.cfg.Mode
		}
		sr.box = p.newBoxSlot(m, slot, dir, mode)
		sr.rt, sr.workDir = sr.box, workTarget
	}
	sr.env = p.slotEnv(sr)
	sr.attemptEnv, sr.moduleSets = attemptBase(sr.env, m.spec.Environments)
	return sr, os.MkdirAll(filepath.Join(dir, ".scalebox"), 0o755)
}

func (p *Pilot) stopping() bool { return p.draining.Load() }

// stillHeldLocked drops the tasks whose leases the pilot lost while they
// waited in the queue (it was declared lost and registered again). The
// caller holds p.mu.
func (p *Pilot) stillHeldLocked(batch []*api.LeasedTask) []*api.LeasedTask {
	kept := batch[:0]
	for _, t := range batch {
		if p.held[t.TaskID] == t.Attempt {
			kept = append(kept, t)
		}
	}
	return kept
}

// signalSettle is how long a task that died of SIGTERM, SIGKILL, SIGINT or
// SIGHUP waits for the pilot's own stop signal before it counts as the
// module's failure: a batch system signals every process of a job at about
// the same time, and the task may exit before the pilot's signal handler
// has run.
const signalSettle = time.Second

// killedByBatchSignal reports whether an exit code is 128 + a signal that
// batch systems send to stop a job.
func killedByBatchSignal(code int) bool {
	switch code - 128 {
	case int(syscall.SIGTERM), int(syscall.SIGKILL), int(syscall.SIGINT), int(syscall.SIGHUP):
		return true
	}
	return false
}

// stoppedWithin reports whether the pilot is being stopped (its context
// ended, or it drains), waiting up to d for that to happen.
func (p *Pilot) stoppedWithin(d time.Duration) bool {
	if p.stopping() {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.stopped:
		return true
	case <-t.C:
		return p.stopping()
	}
}

// hook runs a module's lifecycle script (setup, check, teardown) if it has
// one, in the slot's work dir, with the slot's environment. A non-zero
// exit is an error carrying the script's output.
func (p *Pilot) hook(ctx context.Context, sr *slotRun, name string) error {
	f := p.script(sr, name)
	if f == "" {
		return nil
	}
	res, err := sr.rt.Run(ctx, executor.Spec{Argv: []string{f}, Env: sr.env, Dir: sr.workDir, OutputCap: 4096})
	if res == nil {
		return fmt.Errorf("module %s slot %d: %s %s: %v", sr.m.name, sr.slot, name, f, err)
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("module %s slot %d: %s %s exited %d: %s%s", sr.m.name, sr.slot, name, f, res.ExitCode,
			strings.TrimSpace(res.Stdout+"\n"+res.Stderr), startErr(res))
	}
	return nil
}

func startErr(r *executor.Result) string {
	if r.StartErr != nil {
		return " (" + r.StartErr.Error() + ")"
	}
	return ""
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
}

// execute runs one attempt (of one task or one batch) and queues its result.
func (p *Pilot) execute(ctx context.Context, sr *slotRun, batch []*api.LeasedTask) {
	t, m := batch[0], sr.m
	started := time.Now()
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	secret, _ := newSecret()
	a := &attempt{task: t, mod: m, cancel: cancel, secret: secret}
	p.mu.Lock()
	for _, bt := range batch {
		ba := a
		if bt != t {
			ba = &attempt{task: bt, mod: m, cancel: cancel, secret: secret}
		}
		ba.started.Store(true)
		p.running[bt.TaskID] = ba
	}
	p.proxy.register(a)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for _, bt := range batch {
			delete(p.running, bt.TaskID)
		}
		p.proxy.unregister(a)
		p.mu.Unlock()
	}()

	// The slot's work dir is the attempt's WORK_DIR; it is emptied after
	// every attempt (all but .scalebox/, Scalebox's per-slot state), which
	// costs far less than a new directory per task on a slow file system.
	dir := sr.dir
	var listed []string // dir's entries as Collect found them: not listed twice
	defer func() { p.clearWorkDir(dir, "", listed) }()
	rec, res, files := p.runAttempt(actx, sr, taskEnv(sr, t, a.secret), batch)
	if files != nil {
		listed = files.Entries
	}
	rec.StartedAt = &started

	cause := context.Cause(actx)
	switch {
	case errors.Is(cause, errStale):
		// The lease is someone else's: a result would be fenced anyway.
		p.log.Warn("attempt abandoned: lease lost", zap.Int64("task", t.TaskID), zap.Int("attempt", t.Attempt))
		for _, bt := range batch {
			p.unhold(api.TaskAttempt{TaskID: bt.TaskID, Attempt: bt.Attempt})
		}
		return
	case cause != nil:
		// The pilot is stopping (grace over, walltime): not the module's fault.
		rec.Reason = "stopped by the pilot: " + cause.Error()
		for _, bt := range batch {
			r := &api.Result{TaskID: bt.TaskID, Attempt: bt.Attempt, Code: codeTimeout, Infra: true, Record: *rec}
			p.results <- r
		}
		return
	case killedByBatchSignal(rec.ExitCode) && p.stoppedWithin(signalSettle):
		// The batch system signalled the whole job (scancel, qdel, walltime
		// end): the program died of the signal the pilot got too. Not the
		// module's fault: hand the task back as infra, like a task stopped
		// at the end of the grace period.
		rec.Reason = fmt.Sprintf("killed by signal %d while the pilot was being stopped (batch job cancelled or at its walltime)", rec.ExitCode-128)
		for _, bt := range batch {
			r := &api.Result{TaskID: bt.TaskID, Attempt: bt.Attempt, Code: rec.ExitCode, Infra: true, Record: *rec}
			p.results <- r
		}
		return
	}

	code := res
	var msgs []api.Message
	if files != nil {
		if files.StatusCode != nil {
			code = *files.StatusCode
		}
		for _, fm := range files.Messages {
			msgs = append(msgs, api.Message{Module: fm.Module, Body: fm.Body, Headers: fm.Headers})
		}
	}
	a.mu.Lock()
	msgs = append(msgs, a.messages...)
	a.mu.Unlock()
	for i := range msgs {
		h := make(map[string]string, len(msgs[i].Headers)+3)
		for k, v := range msgs[i].Headers {
			h[k] = v
		}
		setDefault(h, "from_host", p.cfg.Host)
		setDefault(h, "from_ip", p.cfg.IP)
		msgs[i].Headers = h
	}
	now := time.Now()
	rec.Code = code
	rec.ReportedAt = &now
	for i, bt := range batch {
		r := &api.Result{TaskID: bt.TaskID, Attempt: bt.Attempt, Code: code, Record: *rec}
		if i == 0 {
			r.Messages = msgs
		}
		p.results <- r
	}
	if code == 0 {
		p.stats.Succeeded.Add(int64(len(batch)))
	} else {
		p.stats.Failed.Add(int64(len(batch)))
	}
	if code != 0 && p.cfg.Keep {
		keep := filepath.Join(p.dir, fmt.Sprintf("attempt-%d-%d", t.TaskID, t.Attempt))
		p.clearWorkDir(dir, keep, listed)
		listed = nil // what could not be moved is listed again and removed
		p.log.Info("kept work dir of failed attempt", zap.String("dir", keep))
	}
}

// clearWorkDir empties a slot's work dir except .scalebox/; with keepAs,
// the entries are moved there instead of removed (--keep-failed). names
// are the dir's entries if known (nil: list it).
func (p *Pilot) clearWorkDir(dir, keepAs string, names []string) {
	if names == nil {
		f, err := os.Open(dir)
		if err == nil {
			names, err = f.Readdirnames(-1)
			_ = f.Close()
		}
		if err != nil {
			p.log.Warn("read work dir", zap.String("dir", dir), zap.Error(err))
			return
		}
	}
	if keepAs != "" {
		if err := os.MkdirAll(keepAs, 0o755); err != nil {
			p.log.Warn("keep work dir", zap.String("dir", keepAs), zap.Error(err))
			keepAs = ""
		}
	}
	for _, name := range names {
		if name == ".scalebox" {
			continue
		}
		path := filepath.Join(dir, name)
		if keepAs != "" && os.Rename(path, filepath.Join(keepAs, name)) == nil {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			p.log.Warn("clear work dir", zap.String("path", path), zap.Error(err))
		}
	}
}

func setDefault(h map[string]string, k, v string) {
	if _, ok := h[k]; !ok && v != "" {
		h[k] = v
	}
}

// runAttempt prepares the work dir, runs the program and collects the
// interface files. It returns the attempt record, the exit code and the
// collected files (nil if the program did not run).
func (p *Pilot) runAttempt(ctx context.Context, sr *slotRun, env []string, batch []*api.LeasedTask) (*api.Attempt, int, *workdir.Files) {
	t, m, dir := batch[0], sr.m, sr.dir
	rec := &api.Attempt{Host: p.cfg.Host, Slot: strconv.Itoa(sr.slot), ExitCode: -1, Extra: map[string]any{"runtime": sr.rt.Name()}}
	fail := func(code int, msg string) (*api.Attempt, int, *workdir.Files) {
		rec.Reason, rec.Stderr = msg, msg
		return rec, code, nil
	}
	if m.spec.TaskBatchSize > 1 {
		bts := make([]workdir.BatchTask, len(batch))
		for i, bt := range batch {
			bts[i] = workdir.BatchTask{TaskID: bt.TaskID, Body: bt.Body, Headers: string(bt.Headers)}
		}
		if err := workdir.WriteBatch(dir, bts); err != nil {
			return fail(codeNoProgram, "write batch file: "+err.Error())
		}
	}
	argv, err := p.program(sr, env)
	if err != nil {
		return fail(codeNoProgram, err.Error())
	}
	headers := string(t.Headers)
	if headers == "" {
		headers = "{}"
	}
	argv = append(argv, t.Body, headers)
	textCap := m.spec.OutputTextSize
	if textCap <= 0 {
		textCap = defaultTextCap
	}
	keepHead := strings.EqualFold(m.spec.TextTruncMode, "TAIL")
	spec := executor.Spec{Argv: argv, Env: env, Dir: sr.workDir, OutputCap: textCap, KeepHead: keepHead}
	if m.spec.TaskMaxSeconds > 0 {
		spec.Timeout = time.Duration(m.spec.TaskMaxSeconds) * time.Second
	}
	res, err := sr.rt.Run(ctx, spec)
	if sr.box != nil {
		if run := sr.box.lastRun(res); run != nil {
			rec.Extra["container"] = run
		}
	}
	if res == nil {
		if sr.box != nil {
			return fail(codeNotRunnable, fmt.Sprintf("run %s in a container: %v", argv[0], err))
		}
		return fail(codeNoProgram, fmt.Sprintf("run %s: %v", argv[0], err))
	}
	rec.ExitCode = res.ExitCode
	rec.Stdout, rec.Stderr = res.Stdout, res.Stderr
	rec.BytesRead, rec.BytesWritten = res.ReadBytes, res.WriteBytes
	rec.CPUUserUS, rec.CPUSystemUS = res.CPUUser.Microseconds(), res.CPUSystem.Microseconds()
	rec.MaxRSS = res.MaxRSS
	if !res.Start.IsZero() {
		s, e := res.Start, res.End
		rec.ProgramStart, rec.ProgramEnd = &s, &e
		m.runtimes.add(e.Sub(s))
	}
	if res.TimedOut {
		rec.Reason = fmt.Sprintf("killed after task_max_seconds=%d", m.spec.TaskMaxSeconds)
	}
	if res.StartErr != nil {
		rec.Reason = res.StartErr.Error()
	}
	if ctx.Err() != nil {
		return rec, res.ExitCode, nil
	}
	files := workdir.Collect(dir, workdir.Options{OutputCap: textCap, KeepHead: keepHead})
	rec.CustomText = files.CustomText
	rec.InputBytes, rec.OutputBytes = files.InputBytes, files.OutputBytes
	for _, ut := range files.UserTimes {
		rec.UserTimes = append(rec.UserTimes, api.LabeledTime{Time: ut.Time, Label: ut.Label})
	}
	if len(files.Extra) > 0 {
		rec.Extra["extra_attributes"] = files.Extra
	}
	if len(files.IOBytes) > 0 {
		rec.Extra["iobytes"] = files.IOBytes
	}
	if len(files.Problems) > 0 {
		rec.Extra["problems"] = files.Problems
	}
	if len(files.RemovedFiles) > 0 {
		// Scalebox deletes the files a module lists in removed-files.txt
		// after counting their bytes (e.g. KEEP_SOURCE_FILE=no).
		if err := workdir.Remove(dir, files.RemovedFiles); err != nil {
			rec.Extra["remove_error"] = err.Error()
		}
	}
	code := res.ExitCode
	if res.TimedOut {
		code = codeTimeout
	}
	return rec, code, files
}

// program resolves the module's program, as Scalebox does: $ACTION_RUN,
// else run.sh in the module's code_path, /app/bin or /app/share/bin; or
// the module's `command` when it is a program rather than a container
// start template. In a container the code_path is /app/bin, and a module
// without one runs the image's /app/bin/run.sh.
func (p *Pilot) program(sr *slotRun, env []string) ([]string, error) {
	m := sr.m.spec
	if cmd := strings.TrimSpace(m.Command); cmd != "" && !isContainerTemplate(cmd) {
		return strings.Fields(cmd), nil
	}
	if f := p.scriptIn(sr, env, "run"); f != "" {
		return []string{f}, nil
	}
	return nil, fmt.Errorf("module %s: no program: set ACTION_RUN, put run.sh in code_path (looked in %s) or set command",
		m.Name, strings.Join(scriptDirs(m), ", "))
}

// script finds a module's lifecycle script ("run", "setup", "check",
// "teardown") with the slot's environment; "" if there is none.
func (p *Pilot) script(sr *slotRun, name string) string { return p.scriptIn(sr, sr.env, name) }

// scriptIn finds a lifecycle script: $ACTION_<NAME>, else <name>.sh in
// the module's code dirs, as the program sees it.
func (p *Pilot) scriptIn(sr *slotRun, env []string, name string) string {
	if sr.box == nil {
		return script(sr.m.spec, env, name)
	}
	if f := lookupEnv(env, "ACTION_"+strings.ToUpper(name)); f != "" {
		return f
	}
	for _, d := range codeDirs(sr.m.spec) {
		if st, err := os.Stat(filepath.Join(d, name+".sh")); err == nil && !st.IsDir() {
			return codeTarget + "/" + name + ".sh"
		}
	}
	if name == "run" && len(codeDirs(sr.m.spec)) == 0 {
		return codeTarget + "/run.sh" // Scalebox images carry it there
	}
	return ""
}

// script finds a host module's lifecycle script: $ACTION_<NAME>, else
// <name>.sh in the module's code dirs. It returns "" if there is none.
func script(m *appspec.Module, env []string, name string) string {
	if f := lookupEnv(env, "ACTION_"+strings.ToUpper(name)); f != "" {
		return f
	}
	for _, d := range scriptDirs(m) {
		f := filepath.Join(d, name+".sh")
		if st, err := os.Stat(f); err == nil && !st.IsDir() {
			return f
		}
	}
	return ""
}

func scriptDirs(m *appspec.Module) []string {
	var dirs []string
	if cp := m.CodePath; cp != "" {
		dirs = append(dirs, cp)
	}
	if cp := m.Arguments["code_path"]; cp != "" && cp != m.CodePath {
		dirs = append(dirs, cp)
	}
	return append(dirs, "/app/bin", "/app/share/bin")
}

func isContainerTemplate(cmd string) bool {
	if strings.Contains(cmd, "{{") {
		return true
	}
	switch strings.Fields(cmd)[0] {
	case "docker", "podman", "singularity", "apptainer", "nerdctl":
		return true
	}
	return false
}

func lookupEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v
		}
	}
	return ""
}

// slotEnv is the environment Scalebox gives a module's slot (spec §3.3);
// lifecycle hooks run with it, tasks with taskEnv. In a container, paths
// are the container's.
func (p *Pilot) slotEnv(sr *slotRun) []string {
	m := sr.m
	var env []string
	broker := p.proxy.url
	localData, _ := p.appDataDir(m.appID)
	dataRoot := ""
	if p.ctr != nil {
		dataRoot = p.ctr.cfg.DataRoot
	}
	if sr.box != nil {
		env = containerEnv(p.ctr.oci(), sr.box.mode)
		broker = proxyTarget
		if localData != "" && !m.spec.HasSlotOption("disable_local_mapping") {
			localData = localDataTarget
		} else {
			localData = ""
		}
		if dataRoot != "" && !m.spec.HasSlotOption("disable_data_mapping") {
			dataRoot = dataRootTarget
		} else {
			dataRoot = ""
		}
	} else {
		env = os.Environ()
		if p.cfg.CLIPath != "" {
			env = append(env, "PATH="+filepath.Dir(p.cfg.CLIPath)+string(os.PathListSeparator)+os.Getenv("PATH"))
		}
	}
	sink := p.mainRouter // Scalebox: the router for routed apps, else the next module
	if len(m.spec.SinkModules) > 0 {
		sink = m.spec.SinkModules[0]
	}
	add := func(k, v string) { env = append(env, k+"="+v) }
	add("SCALEBOX_BROKER", broker)
	add("SCALEBOX_TOKEN", p.proxy.hookSecret)
	add("APP_ID", strconv.FormatInt(m.appID, 10))
	add("MODULE_ID", strconv.FormatInt(m.id, 10))
	add("PLAT_MODULE_ID", strconv.FormatInt(m.id, 10))
	add("MODULE_NAME", m.name)
	add("PLAT_MODULE_NAME", m.name)
	add("SLOT_ID", strconv.Itoa(max(0, sr.slot)))
	add("WORK_DIR", sr.workDir)
	add("SINK_MODULE", sink)
	add("HOST_NAME", p.cfg.Host)
	add("LOCAL_IP", p.cfg.IP)
	add("CLUSTER", p.cfg.Site)
	add("PILOT_ID", strconv.FormatInt(p.id.Load(), 10))
	add("TASK_BATCH_SIZE", strconv.Itoa(max(1, m.spec.TaskBatchSize)))
	if localData != "" {
		add("LOCAL_DATA_ROOT", localData)
	}
	if dataRoot != "" {
		add("CLUSTER_DATA_ROOT", dataRoot)
	}
	if g := m.spec.Resources.GPUs; g > 0 {
		// The slot's share of the node's GPUs: slot i gets devices i·g … i·g+g-1.
		ids := make([]string, g)
		for i := range ids {
			ids[i] = strconv.Itoa(max(0, sr.slot)*g + i)
		}
		v := "CUDA_VISIBLE_DEVICES"
		if p.ctr != nil && p.ctr.cfg.GPU == container.GPUAMD {
			v = "ROCR_VISIBLE_DEVICES"
		}
		add(v, strings.Join(ids, ","))
	}
	if m.spec.TaskMaxSeconds > 0 {
		add("TASK_MAX_SECONDS", strconv.Itoa(m.spec.TaskMaxSeconds))
	}
	for k, v := range m.spec.Arguments {
		add(strings.ToUpper(k), v)
	}
	return dedupEnv(append(env, m.spec.Environments...))
}

// attemptVars are the variables taskEnv sets for each attempt.
var attemptVars = map[string]bool{
	"SCALEBOX_TOKEN": true, "TASK_ID": true, "TASK_ATTEMPT": true,
	"FROM_MODULE": true, "FROM_HOST": true, "FROM_IP": true, "BATCH_FILE": true,
}

// attemptBase splits a slot's environment for taskEnv: the entries it
// copies for every attempt (all but the attempt variables, which the
// attempt sets, unless the module's own environments set them) and the
// attempt variables the module sets.
func attemptBase(slotEnv, moduleEnv []string) (base []string, moduleSets map[string]bool) {
	for _, kv := range moduleEnv {
		if k, _, _ := strings.Cut(kv, "="); attemptVars[k] {
			if moduleSets == nil {
				moduleSets = map[string]bool{}
			}
			moduleSets[k] = true
		}
	}
	base = make([]string, 0, len(slotEnv))
	for _, kv := range slotEnv {
		if k, _, _ := strings.Cut(kv, "="); !attemptVars[k] || moduleSets[k] {
			base = append(base, kv)
		}
	}
	return base, moduleSets
}

// taskEnv is the environment of one attempt: the slot's (built once per
// slot by slotEnv and split by attemptBase) plus the attempt's, one entry
// per variable; the module's own environments win over everything the
// platform sets.
func taskEnv(sr *slotRun, t *api.LeasedTask, secret string) []string {
	env := make([]string, len(sr.attemptEnv), len(sr.attemptEnv)+len(attemptVars))
	copy(env, sr.attemptEnv)
	hdr := map[string]string{}
	_ = jsonUnmarshal(t.Headers, &hdr)
	add := func(k, v string) {
		if !sr.moduleSets[k] {
			env = append(env, k+"="+v)
		}
	}
	add("SCALEBOX_TOKEN", secret)
	add("TASK_ID", strconv.FormatInt(t.TaskID, 10))
	add("TASK_ATTEMPT", strconv.Itoa(t.Attempt))
	add("FROM_MODULE", hdr["from_module"])
	add("FROM_HOST", hdr["from_host"])
	add("FROM_IP", hdr["from_ip"])
	if sr.m.spec.TaskBatchSize > 1 {
		add("BATCH_FILE", path.Join(sr.workDir, "input-messages.txt"))
	}
	return env
}

// dedupEnv keeps one entry per variable, the last one set, in the place
// of its first: a shell takes the last of duplicate variables, but a
// program exec'd directly reads the first (getenv), which would be the
// pilot's own SCALEBOX_BROKER, PATH, … instead of the task's.
func dedupEnv(env []string) []string {
	at := make(map[string]int, len(env))
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := at[k]; ok {
			out[i] = kv
			continue
		}
		at[k] = len(out)
		out = append(out, kv)
	}
	return out
}
