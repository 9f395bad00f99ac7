package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/store"
)

// Limits on what one task may carry.
const (
	MaxBodyBytes    = 64 << 10
	MaxHeadersBytes = 64 << 10
)

type appState struct {
	id      int64
	name    string
	status  string
	spec    *appspec.App
	modules map[string]*moduleState
}

type moduleState struct {
	id   int64
	name string
	site string
	app  *appState
	spec *appspec.Module

	// Flow-control parameters, read once from spec for the lease and
	// completion paths.
	maxInflight    int           // max_inflight; 0 = none
	vtaskSize      int64         // vtask_size; 0 = none
	failsPerMinute int           // max_tasks_per_minute; 0 = none
	progress       []progressGap // node_progress_gap; nil = none
}

func newModuleState(id int64, name, site string, app *appState, spec *appspec.Module) *moduleState {
	m := &moduleState{id: id, name: name, site: site, app: app, spec: spec, vtaskSize: vtaskSize(spec)}
	m.maxInflight, _ = strconv.Atoi(spec.Parameters["max_inflight"])
	m.maxInflight = max(m.maxInflight, 0)
	m.failsPerMinute, _ = strconv.Atoi(spec.Parameters["max_tasks_per_minute"])
	m.failsPerMinute = max(m.failsPerMinute, 0)
	m.progress, _ = parseProgressGap(spec.Parameters["node_progress_gap"]) // checked when the app was created
	return m
}

// defaultSink is where a message that names no module goes: the module's
// first sink module, else the app's main router.
func (m *moduleState) defaultSink() string {
	if len(m.spec.SinkModules) > 0 {
		return m.spec.SinkModules[0]
	}
	return m.app.spec.MainRouter
}

// cacheApp parses a stored app's definition into the broker's cache.
func (b *Broker) cacheApp(a *store.App) (*appState, error) {
	var spec appspec.App
	if err := json.Unmarshal(a.Spec, &spec); err != nil {
		return nil, fmt.Errorf("decode definition of app %d: %w", a.ID, err)
	}
	st := &appState{id: a.ID, name: a.Name, status: a.Status, spec: &spec, modules: map[string]*moduleState{}}
	for _, m := range a.Modules {
		ms := spec.Module(m.Name)
		if ms == nil {
			return nil, fmt.Errorf("app %d: module %q missing from its definition", a.ID, m.Name)
		}
		st.modules[m.Name] = newModuleState(m.ID, m.Name, m.Site, st, ms)
	}
	b.mu.Lock()
	b.apps[a.ID] = st
	for _, m := range st.modules {
		b.modules[m.id] = m
	}
	b.mu.Unlock()
	return st, nil
}

// app returns a cached app, loading it from the store if needed.
func (b *Broker) app(ctx context.Context, id int64) (*appState, error) {
	b.mu.RLock()
	a := b.apps[id]
	b.mu.RUnlock()
	if a != nil {
		return a, nil
	}
	sa, err := b.store.AppGet(ctx, id)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("app %d", id))
	}
	return b.cacheApp(sa)
}

// module returns a cached module by id, loading its app if needed.
func (b *Broker) moduleByID(ctx context.Context, appID, moduleID int64) (*moduleState, error) {
	b.mu.RLock()
	m := b.modules[moduleID]
	b.mu.RUnlock()
	if m != nil {
		return m, nil
	}
	if _, err := b.app(ctx, appID); err != nil {
		return nil, err
	}
	b.mu.RLock()
	m = b.modules[moduleID]
	b.mu.RUnlock()
	if m == nil {
		return nil, errorf(api.CodeNotFound, "", fmt.Sprintf("module %d not found", moduleID))
	}
	return m, nil
}

// CreateApp parses app.yaml text, stores the app and its modules, and adds
// the modules' start tasks.
func (b *Broker) CreateApp(ctx context.Context, req *api.AppCreateRequest) (*api.App, error) {
	if strings.TrimSpace(req.YAML) == "" {
		return nil, errorf(api.CodeBadRequest, "yaml", "app definition is empty")
	}
	filename := req.Filename
	if filename == "" {
		filename = "app.yaml"
	}
	spec, err := appspec.Parse(filename, []byte(req.YAML), req.Vars)
	if err != nil {
		return nil, errorf(api.CodeInvalidApp, "yaml", err.Error())
	}
	for name := range req.StartTasks {
		if spec.Module(name) == nil {
			return nil, errorf(api.CodeBadRequest, "start_tasks", fmt.Sprintf("unknown module %q", name))
		}
	}
	for _, m := range spec.Modules {
		if _, err := parseProgressGap(m.Parameters["node_progress_gap"]); err != nil {
			return nil, errorf(api.CodeInvalidApp, "modules."+m.Name+".parameters.node_progress_gap", err.Error())
		}
	}
	appJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("encode app definition: %w", err)
	}
	p := store.AppCreateParams{Name: spec.Name, Status: spec.InitialStatus, Spec: appJSON, Now: b.now()}
	if p.Status == "" {
		p.Status = store.AppRunning
	}
	for _, m := range spec.Modules {
		mj, err := json.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("encode module %s: %w", m.Name, err)
		}
		p.Modules = append(p.Modules, store.ModuleParams{Name: m.Name, Site: m.Site, Spec: mj})
	}
	sa, err := b.store.AppCreate(ctx, p)
	if errors.Is(err, store.ErrConflict) {
		return nil, errorf(api.CodeInvalidApp, "modules", "module names repeat")
	}
	if err != nil {
		return nil, err
	}
	a, err := b.cacheApp(sa)
	if err != nil {
		return nil, err
	}
	if err := b.createVtaskSemaphores(ctx, a.id, spec); err != nil {
		return nil, err
	}
	var starts []api.TaskInput
	for _, m := range spec.Modules {
		bodies := m.StartTasks
		if override, ok := req.StartTasks[m.Name]; ok {
			bodies = override
		}
		for _, body := range bodies {
			if strings.HasPrefix(body, "FILE:") {
				return nil, errorf(api.CodeBadRequest, "start_tasks",
					fmt.Sprintf("module %s: start_task %q names a file the broker cannot read; send its lines in start_tasks", m.Name, body))
			}
			starts = append(starts, api.TaskInput{Module: m.Name, Body: body})
		}
	}
	if len(starts) > 0 {
		if _, err := b.addTasks(ctx, a, &api.TaskAddRequest{Tasks: starts}); err != nil {
			return nil, fmt.Errorf("add start tasks: %w", err)
		}
	}
	return b.AppView(ctx, a.id)
}

// AppView renders an app with per-module task counts.
func (b *Broker) AppView(ctx context.Context, id int64) (*api.App, error) {
	sa, err := b.store.AppGet(ctx, id)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("app %d", id))
	}
	counts, err := b.store.AppTaskCounts(ctx, id)
	if err != nil {
		return nil, err
	}
	out := appView(sa)
	byID := map[int64]map[string]int64{}
	for _, c := range counts {
		if byID[c.ModuleID] == nil {
			byID[c.ModuleID] = map[string]int64{}
		}
		byID[c.ModuleID][api.StatusName(c.Status)] += c.Count
	}
	for i := range out.Modules {
		out.Modules[i].Counts = byID[out.Modules[i].ID]
		out.Modules[i].Spec = sa.Modules[i].Spec
	}
	out.Spec = sa.Spec
	return out, nil
}

func appView(a *store.App) *api.App {
	out := &api.App{ID: a.ID, Name: a.Name, Status: a.Status, Result: a.Result, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt}
	for _, m := range a.Modules {
		out.Modules = append(out.Modules, api.Module{ID: m.ID, Name: m.Name, Site: m.Site})
	}
	return out
}

// ListApps lists apps without counts.
func (b *Broker) ListApps(ctx context.Context) ([]*api.App, error) {
	apps, err := b.store.AppList(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*api.App, 0, len(apps))
	for _, a := range apps {
		out = append(out, appView(a))
	}
	return out, nil
}

// appTransitions lists, per action, the statuses it may start from and the
// status it leads to.
var appTransitions = map[string]struct {
	from []string
	to   string
}{
	"pause":  {[]string{store.AppRunning, store.AppInitial}, store.AppPaused},
	"resume": {[]string{store.AppPaused, store.AppInitial, store.AppRunning}, store.AppRunning},
	"cancel": {[]string{store.AppRunning, store.AppPaused, store.AppInitial, store.AppCancelled}, store.AppCancelled},
	"finish": {[]string{store.AppRunning, store.AppPaused, store.AppInitial, store.AppFinished}, store.AppFinished},
}

// AppAction pauses, resumes, cancels or finishes an app. result is the
// set-finished text (finish only).
func (b *Broker) AppAction(ctx context.Context, id int64, action string, result *string) (*api.App, error) {
	tr, ok := appTransitions[action]
	if !ok {
		return nil, errorf(api.CodeNotFound, "", "unknown app action "+action)
	}
	a, err := b.app(ctx, id)
	if err != nil {
		return nil, err
	}
	b.mu.RLock()
	cur := a.status
	b.mu.RUnlock()
	allowed := false
	for _, f := range tr.from {
		allowed = allowed || f == cur
	}
	if !allowed {
		return nil, errorf(api.CodeConflict, "status", fmt.Sprintf("app %d is %s; cannot %s it", id, cur, action))
	}
	if err := b.store.AppSetStatus(ctx, id, tr.to, result); err != nil {
		return nil, storeErr(err, fmt.Sprintf("app %d", id))
	}
	b.mu.Lock()
	a.status = tr.to
	b.mu.Unlock()
	if tr.to == store.AppRunning {
		for _, m := range a.modules {
			b.waiters.wake(m.id)
		}
	}
	return b.AppView(ctx, id)
}

// AddTasks adds tasks to an app.
func (b *Broker) AddTasks(ctx context.Context, appID int64, req *api.TaskAddRequest) (*api.TaskAddResponse, error) {
	a, err := b.app(ctx, appID)
	if err != nil {
		return nil, err
	}
	return b.addTasks(ctx, a, req)
}

func (b *Broker) addTasks(ctx context.Context, a *appState, req *api.TaskAddRequest) (*api.TaskAddResponse, error) {
	conflict, err := conflictAction(req.Conflict)
	if err != nil {
		return nil, err
	}
	if len(req.Tasks) == 0 {
		return &api.TaskAddResponse{IDs: []int64{}}, nil
	}
	inputs := make([]store.TaskInput, len(req.Tasks))
	for i, t := range req.Tasks {
		name := t.Module
		if name == "" {
			name = req.Module
		}
		field := fmt.Sprintf("tasks[%d]", i)
		if name == "" {
			name = firstModule(a)
			if name == "" {
				return nil, errorf(api.CodeBadRequest, field+".module", "no module named and the app has no main router")
			}
		}
		m := a.modules[name]
		if m == nil {
			return nil, errorf(api.CodeBadRequest, field+".module", fmt.Sprintf("app %d has no module %q", a.id, name))
		}
		in, err := taskInput(m, t.Body, t.Headers)
		if err != nil {
			var ae *api.Error
			if errors.As(err, &ae) {
				ae.Field = field + "." + ae.Field
			}
			return nil, err
		}
		inputs[i] = in
	}
	res, err := b.store.TaskAdd(ctx, store.TaskAddParams{AppID: a.id, Tasks: inputs, Conflict: conflict, Now: b.now()})
	if err != nil {
		return nil, err
	}
	b.metrics.added.Add(float64(res.Inserted))
	woken := map[int64]bool{}
	for i, in := range inputs {
		if (!res.Duplicate[i] || conflict == store.ConflictOverwrite) && !woken[in.ModuleID] {
			woken[in.ModuleID] = true
			b.waiters.wake(in.ModuleID)
		}
	}
	return &api.TaskAddResponse{Inserted: res.Inserted, Duplicates: res.Duplicates, IDs: res.IDs}, nil
}

// firstModule is where tasks that name no module go: the main router if
// the app has one, else its first module (as `scalebox run` does).
func firstModule(a *appState) string {
	if a.spec.MainRouter != "" {
		return a.spec.MainRouter
	}
	if len(a.spec.Modules) > 0 {
		return a.spec.Modules[0].Name
	}
	return ""
}

func conflictAction(s string) (string, error) {
	switch strings.ToUpper(s) {
	case "", store.ConflictIgnore:
		return store.ConflictIgnore, nil
	case store.ConflictOverwrite:
		return store.ConflictOverwrite, nil
	}
	return "", errorf(api.CodeBadRequest, "conflict", fmt.Sprintf("unknown conflict action %q (IGNORE or OVERWRITE)", s))
}

// taskInput validates one message for module m and fills its routing.
func taskInput(m *moduleState, body string, headers map[string]string) (store.TaskInput, error) {
	if body == "" {
		return store.TaskInput{}, errorf(api.CodeBadRequest, "body", "task body is empty (the body is the task's key)")
	}
	if !utf8.ValidString(body) || strings.ContainsRune(body, 0) {
		return store.TaskInput{}, errorf(api.CodeBadRequest, "body", "task body must be UTF-8 text without NUL bytes")
	}
	if len(body) > MaxBodyBytes {
		return store.TaskInput{}, errorf(api.CodeTooLarge, "body", fmt.Sprintf("task body is %d bytes; the limit is %d", len(body), MaxBodyBytes))
	}
	hj := "{}"
	if len(headers) > 0 {
		b, err := json.Marshal(headers)
		if err != nil {
			return store.TaskInput{}, errorf(api.CodeBadRequest, "headers", err.Error())
		}
		if len(b) > MaxHeadersBytes {
			return store.TaskInput{}, errorf(api.CodeTooLarge, "headers", fmt.Sprintf("headers are %d bytes; the limit is %d", len(b), MaxHeadersBytes))
		}
		hj = string(b)
		if strings.Contains(hj, `\u0000`) {
			return store.TaskInput{}, errorf(api.CodeBadRequest, "headers", "headers must not contain NUL bytes")
		}
	}
	in := store.TaskInput{ModuleID: m.id, Body: body, Headers: hj, Status: store.StatusReady}
	if m.spec.InitialTaskStatus == "INITIAL" {
		in.Status = store.StatusInitial
	}
	if m.spec.TaskDistMode == "HOST-BOUND" {
		in.ToHost = headers["to_host"]
		if in.ToHost == "" {
			in.ToHost = headers["to_ip"]
		}
	}
	return in, nil
}

// ActivateTasks makes INITIAL tasks of an app READY and wakes the pilots
// waiting for them.
func (b *Broker) ActivateTasks(ctx context.Context, appID int64, r *api.TaskActivateRequest) (*api.TaskActivateResponse, error) {
	a, err := b.app(ctx, appID)
	if err != nil {
		return nil, err
	}
	if r.Limit < 0 {
		return nil, errorf(api.CodeBadRequest, "limit", "limit must not be negative")
	}
	p := store.TaskActivateParams{AppID: appID, IDs: r.IDs, Limit: r.Limit, Now: b.now()}
	var wake []int64
	b.mu.RLock()
	if r.Module != "" {
		m := a.modules[r.Module]
		if m == nil {
			b.mu.RUnlock()
			return nil, errorf(api.CodeNotFound, "module", fmt.Sprintf("app %d has no module %q", appID, r.Module))
		}
		p.ModuleID, wake = m.id, []int64{m.id}
	} else {
		for _, m := range a.modules {
			wake = append(wake, m.id)
		}
	}
	b.mu.RUnlock()
	n, err := b.store.TaskActivate(ctx, p)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		for _, id := range wake {
			b.waiters.wake(id)
		}
	}
	return &api.TaskActivateResponse{Activated: n}, nil
}
