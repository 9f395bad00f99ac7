package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/store"
)

// Scalebox's vtask counter (spec §4.5.2): a module with vtask_size N gets
// the app semaphore "vtask_size:<module>" = N when the app is created; a
// lease takes at most its value in new tasks and decrements it by the new
// tasks leased (a retry was counted when it was first leased); the module's
// scripts give the count back at the vtask's end (`scalebox semaphore
// increment vtask_size:<module>`). While it is ≤ 0 the module gets no new
// work. Only the DEFAULT form is implemented; host_vtask_size and
// slot_vtask_size are not.

// vtaskSemaphore is the name of a module's vtask counter.
func vtaskSemaphore(module string) string { return "vtask_size:" + module }

// vtaskSize is a module's vtask_size parameter (0 = none).
func vtaskSize(m *appspec.Module) int64 {
	n, _ := strconv.ParseInt(m.Parameters["vtask_size"], 10, 64)
	return max(n, 0)
}

// createVtaskSemaphores makes the counters of a new app's modules (and the
// ':'-prefixed copies of vtask_size_sema_copy).
func (b *Broker) createVtaskSemaphores(ctx context.Context, appID int64, spec *appspec.App) error {
	for _, m := range spec.Modules {
		n := vtaskSize(m)
		if n == 0 {
			continue
		}
		names := []string{vtaskSemaphore(m.Name)}
		if appspec.IsYes(m.Parameters["vtask_size_sema_copy"]) {
			names = append(names, ":"+vtaskSemaphore(m.Name))
		}
		for _, name := range names {
			if err := b.store.SemaphoreCreate(ctx, appID, name, n, ""); err != nil && !errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("module %s: semaphore %s: %w", m.Name, name, err)
			}
		}
	}
	return nil
}

// vtaskGate serialises the leases of modules with a vtask counter.
type vtaskGate struct {
	mu    sync.Mutex
	locks map[int64]*sync.Mutex
}

func (g *vtaskGate) lock(id int64) *sync.Mutex {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.locks == nil {
		g.locks = map[int64]*sync.Mutex{}
	}
	l := g.locks[id]
	if l == nil {
		l = &sync.Mutex{}
		g.locks[id] = l
	}
	return l
}

// gateVtasks trims lease requests to the modules' vtask counters. The
// returned done must be called with the leases granted: it decrements the
// counters by the new tasks and releases the modules.
func (b *Broker) gateVtasks(ctx context.Context, reqs []store.ModuleLease) ([]store.ModuleLease, func([]*store.Lease), error) {
	type gated struct {
		m    *moduleState
		lock *sync.Mutex
	}
	var gs []gated
	b.mu.RLock()
	for _, r := range reqs {
		if m := b.modules[r.ModuleID]; m != nil && m.vtaskSize > 0 {
			gs = append(gs, gated{m: m})
		}
	}
	b.mu.RUnlock()
	if len(gs) == 0 {
		return reqs, func([]*store.Lease) {}, nil
	}
	slices.SortFunc(gs, func(x, y gated) int { return int(x.m.id - y.m.id) }) // lock order
	unlock := func() {
		for _, g := range gs {
			if g.lock != nil {
				g.lock.Unlock()
			}
		}
	}
	values := map[int64]int64{}
	for i := range gs {
		gs[i].lock = b.vtasks.lock(gs[i].m.id)
		gs[i].lock.Lock()
		v, err := b.store.SemaphoreGet(ctx, gs[i].m.app.id, vtaskSemaphore(gs[i].m.name))
		if errors.Is(err, store.ErrNotFound) {
			v = 0 // deleted by the app: no new work
		} else if err != nil {
			unlock()
			return nil, nil, err
		}
		values[gs[i].m.id] = v
	}
	out := reqs[:0:0]
	for _, r := range reqs {
		if v, ok := values[r.ModuleID]; ok {
			if v <= 0 {
				continue
			}
			r.Max = int(min(int64(r.Max), v))
		}
		out = append(out, r)
	}
	return out, func(leased []*store.Lease) {
		defer unlock()
		taken := map[int64]int64{}
		for _, l := range leased {
			if _, ok := values[l.ModuleID]; ok && l.Attempt == 1 {
				taken[l.ModuleID]++
			}
		}
		for _, g := range gs {
			if n := taken[g.m.id]; n > 0 {
				if _, err := b.store.SemaphoreAdd(context.WithoutCancel(ctx), g.m.app.id, vtaskSemaphore(g.m.name), -n, true); err != nil {
					b.log.Error("decrement vtask counter: " + err.Error())
				}
			}
		}
	}, nil
}

// wakeVtask wakes the pilots waiting for a module whose vtask counter was
// given room.
func (b *Broker) wakeVtask(appID int64, name string, v int64) {
	mod, ok := strings.CutPrefix(name, "vtask_size:")
	if !ok || v <= 0 {
		return
	}
	b.mu.RLock()
	a := b.apps[appID]
	var id int64
	if a != nil && a.modules[mod] != nil {
		id = a.modules[mod].id
	}
	b.mu.RUnlock()
	if id != 0 {
		b.waiters.wake(id)
	}
}
