package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/store"
)

// TaskListQuery filters a task listing.
type TaskListQuery struct {
	AppID  int64
	Module string
	Status *int
	After  int64
	Limit  int
}

// ListTasks lists tasks with a cursor.
func (b *Broker) ListTasks(ctx context.Context, q TaskListQuery) (*api.TaskList, error) {
	f := store.TaskFilter{AppID: q.AppID, Status: q.Status, AfterID: q.After, Limit: q.Limit}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	if f.Limit > 10000 {
		f.Limit = 10000
	}
	if q.Module != "" {
		if q.AppID == 0 {
			return nil, errorf(api.CodeBadRequest, "module", "filtering by module needs app")
		}
		a, err := b.app(ctx, q.AppID)
		if err != nil {
			return nil, err
		}
		m := a.modules[q.Module]
		if m == nil {
			return nil, errorf(api.CodeNotFound, "module", fmt.Sprintf("app %d has no module %q", q.AppID, q.Module))
		}
		f.ModuleID = m.id
	}
	tasks, err := b.store.TaskList(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &api.TaskList{Tasks: make([]api.Task, len(tasks))}
	for i, t := range tasks {
		out.Tasks[i] = b.taskView(t)
	}
	if len(tasks) == f.Limit {
		out.Next = tasks[len(tasks)-1].ID
	}
	return out, nil
}

// ShowTask returns a task with all its attempts.
func (b *Broker) ShowTask(ctx context.Context, id int64) (*api.TaskDetail, error) {
	t, err := b.store.TaskGet(ctx, id)
	if err != nil {
		return nil, storeErr(err, fmt.Sprintf("task %d", id))
	}
	if _, err := b.moduleByID(ctx, t.AppID, t.ModuleID); err != nil {
		return nil, err
	}
	atts, err := b.store.AttemptList(ctx, id)
	if err != nil {
		return nil, err
	}
	out := &api.TaskDetail{Task: b.taskView(t), Attempts: make([]api.Attempt, len(atts))}
	for i, a := range atts {
		out.Attempts[i] = attemptView(a)
	}
	return out, nil
}

// ListPilots lists pilots.
func (b *Broker) ListPilots(ctx context.Context, site, status string) ([]api.Pilot, error) {
	ps, err := b.store.PilotList(ctx, store.PilotFilter{Site: site, Status: status})
	if err != nil {
		return nil, err
	}
	out := make([]api.Pilot, len(ps))
	for i, p := range ps {
		out[i] = pilotView(p)
	}
	return out, nil
}

// nameRE is Scalebox's rule for semaphore and variable names.
var nameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9:_.\-]*$`)

func checkName(field, name string) error {
	if !nameRE.MatchString(name) || len(name) > 512 {
		return errorf(api.CodeBadRequest, field, fmt.Sprintf("bad name %q: letters, digits, ':', '_', '.', '-', starting with a letter or '_'", name))
	}
	return nil
}

// CreateSemaphores creates semaphores of an app.
func (b *Broker) CreateSemaphores(ctx context.Context, appID int64, r *api.SemaphoreCreateRequest) error {
	if _, err := b.app(ctx, appID); err != nil {
		return err
	}
	conflict, err := conflictAction(r.Conflict)
	if err != nil {
		return err
	}
	if len(r.Semaphores) == 0 {
		return errorf(api.CodeBadRequest, "semaphores", "no semaphores given")
	}
	for name := range r.Semaphores {
		if err := checkName("semaphores", name); err != nil {
			return err
		}
	}
	for name, v := range r.Semaphores {
		if err := b.store.SemaphoreCreate(ctx, appID, name, v, conflict); err != nil {
			return storeErr(err, "semaphore "+name)
		}
	}
	return nil
}

// GetSemaphore reads one semaphore.
func (b *Broker) GetSemaphore(ctx context.Context, appID int64, name string) (*api.Semaphore, error) {
	v, err := b.store.SemaphoreGet(ctx, appID, name)
	if err != nil {
		return nil, storeErr(err, "semaphore "+name)
	}
	return &api.Semaphore{Name: name, Value: v}, nil
}

// ListSemaphores lists an app's semaphores by name prefix.
func (b *Broker) ListSemaphores(ctx context.Context, appID int64, prefix string) ([]api.Semaphore, error) {
	nv, err := b.store.SemaphoreList(ctx, appID, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.Semaphore, len(nv))
	for i, s := range nv {
		out[i] = api.Semaphore{Name: s.Name, Value: s.Value}
	}
	return out, nil
}

// SetSemaphore sets an existing semaphore.
func (b *Broker) SetSemaphore(ctx context.Context, appID int64, name string, v int64) (*api.Semaphore, error) {
	if err := b.store.SemaphoreSet(ctx, appID, name, v); err != nil {
		return nil, storeErr(err, "semaphore "+name)
	}
	b.wakeVtask(appID, name, v)
	return &api.Semaphore{Name: name, Value: v}, nil
}

// IncrementSemaphore adds delta to a semaphore.
func (b *Broker) IncrementSemaphore(ctx context.Context, appID int64, name string, r *api.SemaphoreIncrement) (*api.Semaphore, error) {
	if r.AutoCreate {
		if _, err := b.app(ctx, appID); err != nil {
			return nil, err
		}
		if err := checkName("name", name); err != nil {
			return nil, err
		}
	}
	v, err := b.store.SemaphoreAdd(ctx, appID, name, r.Delta, r.AutoCreate)
	if err != nil {
		return nil, storeErr(err, "semaphore "+name)
	}
	b.wakeVtask(appID, name, v)
	return &api.Semaphore{Name: name, Value: v}, nil
}

// GetVariable reads a variable.
func (b *Broker) GetVariable(ctx context.Context, appID int64, name string) (*api.Variable, error) {
	v, err := b.store.VariableGet(ctx, appID, name)
	if err != nil {
		return nil, storeErr(err, "variable "+name)
	}
	return &api.Variable{Name: name, Value: v}, nil
}

// SetVariable creates or replaces a variable.
func (b *Broker) SetVariable(ctx context.Context, appID int64, name, value string) (*api.Variable, error) {
	if _, err := b.app(ctx, appID); err != nil {
		return nil, err
	}
	if err := checkName("name", name); err != nil {
		return nil, err
	}
	if err := b.store.VariableSet(ctx, appID, name, value); err != nil {
		return nil, err
	}
	return &api.Variable{Name: name, Value: value}, nil
}

// ListVariables lists an app's variables by name prefix.
func (b *Broker) ListVariables(ctx context.Context, appID int64, prefix string) ([]api.Variable, error) {
	nv, err := b.store.VariableList(ctx, appID, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]api.Variable, len(nv))
	for i, s := range nv {
		out[i] = api.Variable{Name: s.Name, Value: s.Value}
	}
	return out, nil
}

// siteKinds are the kinds of site the broker accepts.
var siteKinds = map[string]bool{"local": true, "slurm": true, "pbs": true, "ssh": true, "kubernetes": true}

// PutSite registers or replaces a site.
func (b *Broker) PutSite(ctx context.Context, name string, s *api.Site) (*api.Site, error) {
	if err := checkName("name", name); err != nil {
		return nil, err
	}
	if s.Name != "" && s.Name != name {
		return nil, errorf(api.CodeBadRequest, "name", fmt.Sprintf("body names site %q, path %q", s.Name, name))
	}
	kind := strings.ToLower(s.Kind)
	if !siteKinds[kind] {
		return nil, errorf(api.CodeBadRequest, "kind", fmt.Sprintf("unknown site kind %q (local, slurm, pbs, ssh, kubernetes)", s.Kind))
	}
	spec := []byte(s.Spec)
	if len(spec) == 0 {
		spec = []byte("{}")
	}
	if !json.Valid(spec) {
		return nil, errorf(api.CodeBadRequest, "spec", "site spec is not valid JSON")
	}
	if string(spec) != "{}" {
		sp, err := site.Parse("spec", spec)
		if err != nil {
			return nil, errorf(api.CodeBadRequest, "spec", err.Error())
		}
		if sp.Name != name || sp.Kind != kind {
			return nil, errorf(api.CodeBadRequest, "spec", fmt.Sprintf("spec names site %q of kind %q; the request says %q, %q", sp.Name, sp.Kind, name, kind))
		}
	}
	now := b.now()
	if err := b.store.SitePut(ctx, &store.Site{Name: name, Kind: kind, Spec: spec, CreatedAt: now, UpdatedAt: now}); err != nil {
		return nil, err
	}
	b.mu.Lock()
	delete(b.siteInflight, name) // re-read at the next lease
	b.mu.Unlock()
	got, err := b.store.SiteGet(ctx, name)
	if err != nil {
		return nil, err
	}
	v := siteView(got)
	return &v, nil
}

// ListSites lists sites.
func (b *Broker) ListSites(ctx context.Context) ([]api.Site, error) {
	ss, err := b.store.SiteList(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Site, len(ss))
	for i, s := range ss {
		out[i] = siteView(s)
	}
	return out, nil
}

// GetSite shows one site.
func (b *Broker) GetSite(ctx context.Context, name string) (*api.Site, error) {
	s, err := b.store.SiteGet(ctx, name)
	if err != nil {
		return nil, storeErr(err, "site "+name)
	}
	v := siteView(s)
	if b.cfg.Provisioner != nil && (s.Kind == "slurm" || s.Kind == "pbs") {
		v.Provisioning = provisioningView(b.cfg.Provisioner.Status(s.Name))
	}
	return &v, nil
}

func siteView(s *store.Site) api.Site {
	return api.Site{Name: s.Name, Kind: s.Kind, Spec: json.RawMessage(s.Spec), CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}
}
