package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

var pilotTests = []namedTest{
	{"RegisterGet", testPilotRegisterGet},
	{"List", testPilotList},
	{"SetStatus", testPilotSetStatus},
	{"MarkLost", testPilotMarkLost},
}

var siteTests = []namedTest{
	{"PutGetList", testSitePutGetList},
}

var semaphoreTests = []namedTest{
	{"CreateGetSet", testSemaphoreCreateGetSet},
	{"Add", testSemaphoreAdd},
	{"AddConcurrent", testSemaphoreAddConcurrent},
	{"List", testSemaphoreList},
}

var variableTests = []namedTest{
	{"SetGetList", testVariables},
}

var tokenTests = []namedTest{
	{"CreateLookupCount", testTokens},
}

func testPilotRegisterGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	in := &store.Pilot{
		Site: "slurm-a", Host: "cn042", IP: "10.1.2.3", Cores: 64, MemoryMB: 256000, GPUs: 4,
		Slots: `{"calc":8,"merge":1}`, JobID: "123456", Deadline: at(4 * time.Hour),
		Status:  store.PilotLost, // ignored: a new pilot is ACTIVE
		Version: "v1.2.3", RegisteredAt: T0,
	}
	p, err := s.PilotRegister(ctx, in)
	require.NoError(t, err)
	require.NotZero(t, p.ID)
	require.Equal(t, store.PilotActive, p.Status)
	requireTime(t, T0, p.RegisteredAt, "RegisteredAt")
	requireTime(t, T0, p.LastSeen, "LastSeen")

	got, err := s.PilotGet(ctx, p.ID)
	require.NoError(t, err)
	require.Equal(t, p.ID, got.ID)
	require.Equal(t, "slurm-a", got.Site)
	require.Equal(t, "cn042", got.Host)
	require.Equal(t, "10.1.2.3", got.IP)
	require.Equal(t, 64, got.Cores)
	require.Equal(t, int64(256000), got.MemoryMB)
	require.Equal(t, 4, got.GPUs)
	require.JSONEq(t, `{"calc":8,"merge":1}`, got.Slots)
	require.Equal(t, "123456", got.JobID)
	requireTime(t, at(4*time.Hour), got.Deadline, "Deadline")
	require.Equal(t, store.PilotActive, got.Status)
	require.Equal(t, "v1.2.3", got.Version)
	requireTime(t, T0, got.RegisteredAt, "RegisteredAt")
	requireTime(t, T0, got.LastSeen, "LastSeen")

	// A zero deadline stays zero; ids are distinct.
	p2, err := s.PilotRegister(ctx, &store.Pilot{Site: "local", Host: "h", Slots: `{}`, RegisteredAt: T0})
	require.NoError(t, err)
	require.NotEqual(t, p.ID, p2.ID)
	got, err = s.PilotGet(ctx, p2.ID)
	require.NoError(t, err)
	requireTime(t, time.Time{}, got.Deadline, "Deadline")

	// Without RegisteredAt, "now" is the current time.
	before := time.Now().Add(-time.Minute)
	p3, err := s.PilotRegister(ctx, &store.Pilot{Site: "local", Host: "h", Slots: `{}`})
	require.NoError(t, err)
	got, err = s.PilotGet(ctx, p3.ID)
	require.NoError(t, err)
	require.True(t, got.RegisteredAt.After(before), "RegisteredAt %s", got.RegisteredAt)
	require.True(t, got.LastSeen.After(before), "LastSeen %s", got.LastSeen)

	_, err = s.PilotGet(ctx, p3.ID+1000)
	requireNotFound(t, err)
}

func testPilotList(t *testing.T, s store.Store) {
	ctx := context.Background()
	ps, err := s.PilotList(ctx, store.PilotFilter{})
	require.NoError(t, err)
	require.Empty(t, ps)

	a1 := mustPilot(t, s, "a", "h1", T0)
	b1 := mustPilot(t, s, "b", "h2", T0)
	a2 := mustPilot(t, s, "a", "h3", T0)
	require.NoError(t, s.PilotSetStatus(ctx, a2, store.PilotDraining))

	ids := func(f store.PilotFilter) []int64 {
		t.Helper()
		ps, err := s.PilotList(ctx, f)
		require.NoError(t, err)
		out := make([]int64, len(ps))
		for i, p := range ps {
			out[i] = p.ID
		}
		return out
	}
	// Newest first.
	require.Equal(t, []int64{a2, b1, a1}, ids(store.PilotFilter{}))
	require.Equal(t, []int64{a2, a1}, ids(store.PilotFilter{Site: "a"}))
	require.Equal(t, []int64{b1, a1}, ids(store.PilotFilter{Status: store.PilotActive}))
	require.Equal(t, []int64{a1}, ids(store.PilotFilter{Site: "a", Status: store.PilotActive}))
	require.Empty(t, ids(store.PilotFilter{Site: "c"}))

	ps, err = s.PilotList(ctx, store.PilotFilter{Site: "b"})
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.Equal(t, "h2", ps[0].Host)
	require.JSONEq(t, `{"a":1}`, ps[0].Slots)
}

func testPilotSetStatus(t *testing.T, s store.Store) {
	ctx := context.Background()
	id := mustPilot(t, s, "a", "h1", T0)
	for _, st := range []string{store.PilotDraining, store.PilotGone, store.PilotActive} {
		require.NoError(t, s.PilotSetStatus(ctx, id, st))
		p, err := s.PilotGet(ctx, id)
		require.NoError(t, err)
		require.Equal(t, st, p.Status)
	}
	requireNotFound(t, s.PilotSetStatus(ctx, id+1000, store.PilotGone))
}

func testPilotMarkLost(t *testing.T, s store.Store) {
	ctx := context.Background()
	old := at(-10 * time.Minute)
	active := mustPilot(t, s, "a", "active", old)
	draining := mustPilot(t, s, "a", "draining", old)
	require.NoError(t, s.PilotSetStatus(ctx, draining, store.PilotDraining))
	gone := mustPilot(t, s, "a", "gone", old)
	require.NoError(t, s.PilotSetStatus(ctx, gone, store.PilotGone))
	fresh := mustPilot(t, s, "a", "fresh", T0)
	beating := mustPilot(t, s, "a", "beating", old)
	_, err := s.TaskHeartbeat(ctx, store.TaskHeartbeatParams{PilotID: beating, TTL: time.Minute, Now: at(-time.Minute)})
	require.NoError(t, err)
	// Seen exactly at the cut-off: not before it.
	edge := mustPilot(t, s, "a", "edge", at(-5*time.Minute))
	// The pilot that will be lost holds a lease.
	app := mustApp(t, s, "app", "m")
	added, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: old, Tasks: []store.TaskInput{
		{ModuleID: app.Modules[0].ID, Body: "x", Status: store.StatusReady},
	}})
	require.NoError(t, err)
	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: active, TTL: time.Hour, Now: old,
		Modules: []store.ModuleLease{{ModuleID: app.Modules[0].ID, Max: 1}}})
	require.NoError(t, err)
	require.Len(t, ls, 1)

	lost, err := s.PilotMarkLost(ctx, at(-5*time.Minute))
	require.NoError(t, err)
	var lostIDs []int64
	for _, p := range lost {
		require.Equal(t, store.PilotLost, p.Status)
		requireTime(t, old, p.LastSeen, "LastSeen")
		lostIDs = append(lostIDs, p.ID)
	}
	require.ElementsMatch(t, []int64{active, draining}, lostIDs)

	status := func(id int64) string {
		t.Helper()
		p, err := s.PilotGet(ctx, id)
		require.NoError(t, err)
		return p.Status
	}
	require.Equal(t, store.PilotLost, status(active))
	require.Equal(t, store.PilotLost, status(draining))
	require.Equal(t, store.PilotGone, status(gone))
	require.Equal(t, store.PilotActive, status(fresh))
	require.Equal(t, store.PilotActive, status(beating))
	require.Equal(t, store.PilotActive, status(edge))

	// Its lease expires on its own.
	task, err := s.TaskGet(ctx, added.IDs[0])
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, task.Status)
	require.Equal(t, active, task.PilotID)

	// Already lost pilots are not returned again.
	lost, err = s.PilotMarkLost(ctx, at(-5*time.Minute))
	require.NoError(t, err)
	require.Empty(t, lost)
}

func testSitePutGetList(t *testing.T, s store.Store) {
	ctx := context.Background()
	sites, err := s.SiteList(ctx)
	require.NoError(t, err)
	require.Empty(t, sites)
	_, err = s.SiteGet(ctx, "nope")
	requireNotFound(t, err)

	require.NoError(t, s.SitePut(ctx, &store.Site{Name: "slurm-b", Kind: "slurm", Spec: []byte(`{"partition":"cpu"}`), CreatedAt: T0, UpdatedAt: T0}))
	require.NoError(t, s.SitePut(ctx, &store.Site{Name: "local", Kind: "local", Spec: []byte(`{}`), CreatedAt: T0, UpdatedAt: T0}))
	got, err := s.SiteGet(ctx, "slurm-b")
	require.NoError(t, err)
	require.Equal(t, "slurm-b", got.Name)
	require.Equal(t, "slurm", got.Kind)
	require.JSONEq(t, `{"partition":"cpu"}`, string(got.Spec))
	requireTime(t, T0, got.CreatedAt, "CreatedAt")
	requireTime(t, T0, got.UpdatedAt, "UpdatedAt")

	// Replace: new kind and spec, original CreatedAt.
	later := at(time.Hour)
	require.NoError(t, s.SitePut(ctx, &store.Site{Name: "slurm-b", Kind: "pbs", Spec: []byte(`{"queue":"workq"}`), CreatedAt: later, UpdatedAt: later}))
	got, err = s.SiteGet(ctx, "slurm-b")
	require.NoError(t, err)
	require.Equal(t, "pbs", got.Kind)
	require.JSONEq(t, `{"queue":"workq"}`, string(got.Spec))
	requireTime(t, T0, got.CreatedAt, "CreatedAt")
	requireTime(t, later, got.UpdatedAt, "UpdatedAt")

	sites, err = s.SiteList(ctx)
	require.NoError(t, err)
	require.Len(t, sites, 2)
	require.Equal(t, "local", sites[0].Name)
	require.Equal(t, "slurm-b", sites[1].Name)
	require.Equal(t, "pbs", sites[1].Kind)
}

func testSemaphoreCreateGetSet(t *testing.T, s store.Store) {
	ctx := context.Background()
	app := mustApp(t, s, "app", "a")
	other := mustApp(t, s, "other", "a")

	_, err := s.SemaphoreGet(ctx, app.ID, "vtask_size:a")
	requireNotFound(t, err)
	require.NoError(t, s.SemaphoreCreate(ctx, app.ID, "vtask_size:a", 5, ""))
	v, err := s.SemaphoreGet(ctx, app.ID, "vtask_size:a")
	require.NoError(t, err)
	require.Equal(t, int64(5), v)

	requireConflict(t, s.SemaphoreCreate(ctx, app.ID, "vtask_size:a", 7, ""))
	requireConflict(t, s.SemaphoreCreate(ctx, app.ID, "vtask_size:a", 7, store.ConflictIgnore))
	v, err = s.SemaphoreGet(ctx, app.ID, "vtask_size:a")
	require.NoError(t, err)
	require.Equal(t, int64(5), v)
	require.NoError(t, s.SemaphoreCreate(ctx, app.ID, "vtask_size:a", -3, store.ConflictOverwrite))
	v, err = s.SemaphoreGet(ctx, app.ID, "vtask_size:a")
	require.NoError(t, err)
	require.Equal(t, int64(-3), v)
	// Overwrite of a missing one creates it.
	require.NoError(t, s.SemaphoreCreate(ctx, app.ID, "fresh", 1, store.ConflictOverwrite))
	v, err = s.SemaphoreGet(ctx, app.ID, "fresh")
	require.NoError(t, err)
	require.Equal(t, int64(1), v)

	// App scope.
	_, err = s.SemaphoreGet(ctx, other.ID, "vtask_size:a")
	requireNotFound(t, err)
	require.NoError(t, s.SemaphoreCreate(ctx, other.ID, "vtask_size:a", 100, ""))

	require.NoError(t, s.SemaphoreSet(ctx, app.ID, "vtask_size:a", 42))
	v, err = s.SemaphoreGet(ctx, app.ID, "vtask_size:a")
	require.NoError(t, err)
	require.Equal(t, int64(42), v)
	v, err = s.SemaphoreGet(ctx, other.ID, "vtask_size:a")
	require.NoError(t, err)
	require.Equal(t, int64(100), v)
	requireNotFound(t, s.SemaphoreSet(ctx, app.ID, "missing", 1))
	_, err = s.SemaphoreGet(ctx, app.ID, "missing")
	requireNotFound(t, err)
}

func testSemaphoreAdd(t *testing.T, s store.Store) {
	ctx := context.Background()
	app := mustApp(t, s, "app", "a")
	other := mustApp(t, s, "other", "a")

	_, err := s.SemaphoreAdd(ctx, app.ID, "n", 1, false)
	requireNotFound(t, err)
	_, err = s.SemaphoreGet(ctx, app.ID, "n")
	requireNotFound(t, err)

	v, err := s.SemaphoreAdd(ctx, app.ID, "n", 3, true)
	require.NoError(t, err)
	require.Equal(t, int64(3), v, "auto-created at delta")
	v, err = s.SemaphoreAdd(ctx, app.ID, "n", -5, false)
	require.NoError(t, err)
	require.Equal(t, int64(-2), v)
	v, err = s.SemaphoreAdd(ctx, app.ID, "n", 10, true)
	require.NoError(t, err)
	require.Equal(t, int64(8), v)
	v, err = s.SemaphoreGet(ctx, app.ID, "n")
	require.NoError(t, err)
	require.Equal(t, int64(8), v)

	_, err = s.SemaphoreGet(ctx, other.ID, "n")
	requireNotFound(t, err)
}

func testSemaphoreAddConcurrent(t *testing.T, s store.Store) {
	ctx := context.Background()
	app := mustApp(t, s, "app", "a")
	require.NoError(t, s.SemaphoreCreate(ctx, app.ID, "counter", 0, ""))
	const workers, adds = 6, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	results := make(chan int64, workers*adds)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range adds {
				v, err := s.SemaphoreAdd(ctx, app.ID, "counter", 1, false)
				if err != nil {
					errs <- err
					return
				}
				results <- v
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(results)
	for err := range errs {
		require.NoError(t, err)
	}
	// Every add saw a distinct value: the adds were atomic.
	seen := map[int64]bool{}
	for v := range results {
		require.False(t, seen[v], "value %d returned twice", v)
		seen[v] = true
	}
	require.Len(t, seen, workers*adds)
	v, err := s.SemaphoreGet(ctx, app.ID, "counter")
	require.NoError(t, err)
	require.Equal(t, int64(workers*adds), v)
}

func testSemaphoreList(t *testing.T, s store.Store) {
	ctx := context.Background()
	app := mustApp(t, s, "app", "a")
	other := mustApp(t, s, "other", "a")
	list, err := s.SemaphoreList(ctx, app.ID, "")
	require.NoError(t, err)
	require.Empty(t, list)

	for name, v := range map[string]int64{
		"host_vtask_size:head:n2": 2, "host_vtask_size:head:n1": 1, "vtask_size:a": 5,
		"a_b": 6, "axb": 7, "a%": 8,
	} {
		require.NoError(t, s.SemaphoreCreate(ctx, app.ID, name, v, ""))
	}
	require.NoError(t, s.SemaphoreCreate(ctx, other.ID, "host_vtask_size:head:n9", 9, ""))
	require.NoError(t, s.SemaphoreCreate(ctx, other.ID, "Upper", 10, ""))
	list, err = s.SemaphoreList(ctx, other.ID, "u")
	require.NoError(t, err)
	require.Empty(t, list, "case-sensitive")
	list, err = s.SemaphoreList(ctx, other.ID, "Up")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[int64]{{Name: "Upper", Value: 10}}, list)

	list, err = s.SemaphoreList(ctx, app.ID, "host_vtask_size:head:")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[int64]{
		{Name: "host_vtask_size:head:n1", Value: 1},
		{Name: "host_vtask_size:head:n2", Value: 2},
	}, list)

	// The prefix is literal and case-sensitive.
	list, err = s.SemaphoreList(ctx, app.ID, "a_")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[int64]{{Name: "a_b", Value: 6}}, list)
	list, err = s.SemaphoreList(ctx, app.ID, "a%")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[int64]{{Name: "a%", Value: 8}}, list)

	list, err = s.SemaphoreList(ctx, app.ID, "")
	require.NoError(t, err)
	require.Len(t, list, 6)
	for i := 1; i < len(list); i++ {
		require.Less(t, list[i-1].Name, list[i].Name, "ordered by name")
	}
	list, err = s.SemaphoreList(ctx, app.ID, "zzz")
	require.NoError(t, err)
	require.Empty(t, list)
}

func testVariables(t *testing.T, s store.Store) {
	ctx := context.Background()
	app := mustApp(t, s, "app", "a")
	other := mustApp(t, s, "other", "a")

	_, err := s.VariableGet(ctx, app.ID, "x")
	requireNotFound(t, err)
	require.NoError(t, s.VariableSet(ctx, app.ID, "x", "1"))
	v, err := s.VariableGet(ctx, app.ID, "x")
	require.NoError(t, err)
	require.Equal(t, "1", v)
	require.NoError(t, s.VariableSet(ctx, app.ID, "x", "two\nlines ✓"))
	v, err = s.VariableGet(ctx, app.ID, "x")
	require.NoError(t, err)
	require.Equal(t, "two\nlines ✓", v)
	require.NoError(t, s.VariableSet(ctx, app.ID, "empty", ""))
	v, err = s.VariableGet(ctx, app.ID, "empty")
	require.NoError(t, err)
	require.Equal(t, "", v)

	_, err = s.VariableGet(ctx, other.ID, "x")
	requireNotFound(t, err)
	require.NoError(t, s.VariableSet(ctx, other.ID, "x", "other"))

	require.NoError(t, s.VariableSet(ctx, app.ID, "cfg.b", "B"))
	require.NoError(t, s.VariableSet(ctx, app.ID, "cfg.a", "A"))
	require.NoError(t, s.VariableSet(ctx, app.ID, "cfgXa", "no"))
	list, err := s.VariableList(ctx, app.ID, "cfg.")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[string]{{Name: "cfg.a", Value: "A"}, {Name: "cfg.b", Value: "B"}}, list)
	list, err = s.VariableList(ctx, app.ID, "")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[string]{
		{Name: "cfg.a", Value: "A"}, {Name: "cfg.b", Value: "B"}, {Name: "cfgXa", Value: "no"},
		{Name: "empty", Value: ""}, {Name: "x", Value: "two\nlines ✓"},
	}, list)
	list, err = s.VariableList(ctx, other.ID, "")
	require.NoError(t, err)
	require.Equal(t, []store.NameValue[string]{{Name: "x", Value: "other"}}, list)
}

func testTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	n, err := s.TokenCount(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	_, err = s.TokenLookup(ctx, "ab")
	requireNotFound(t, err)

	hash := "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	require.NoError(t, s.TokenCreate(ctx, &store.Token{Hash: hash, Name: "pilot-a", Role: store.RolePilot, Site: "slurm-a", CreatedAt: T0}))
	require.NoError(t, s.TokenCreate(ctx, &store.Token{Hash: "00ff", Name: "admin", Role: store.RoleAdmin, CreatedAt: T0}))
	requireConflict(t, s.TokenCreate(ctx, &store.Token{Hash: hash, Name: "again", Role: store.RoleUser, CreatedAt: T0}))

	tok, err := s.TokenLookup(ctx, hash)
	require.NoError(t, err)
	require.Equal(t, hash, tok.Hash)
	require.Equal(t, "pilot-a", tok.Name)
	require.Equal(t, store.RolePilot, tok.Role)
	require.Equal(t, "slurm-a", tok.Site)
	requireTime(t, T0, tok.CreatedAt, "CreatedAt")

	n, err = s.TokenCount(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, n)
}
