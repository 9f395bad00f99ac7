package storetest

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

var appTests = []namedTest{
	{"CreateGet", testAppCreateGet},
	{"CreateDuplicateModule", testAppCreateDuplicateModule},
	{"GetNotFound", testAppGetNotFound},
	{"List", testAppList},
	{"SetStatus", testAppSetStatus},
	{"TaskCounts", testAppTaskCounts},
}

func requireAppEqual(tb testing.TB, want, got *store.App) {
	tb.Helper()
	require.Equal(tb, want.ID, got.ID)
	require.Equal(tb, want.Name, got.Name)
	require.Equal(tb, want.Status, got.Status)
	require.Equal(tb, want.Result, got.Result)
	require.JSONEq(tb, string(want.Spec), string(got.Spec))
	requireTime(tb, want.CreatedAt, got.CreatedAt, "app CreatedAt")
	require.Len(tb, got.Modules, len(want.Modules))
	for i, m := range want.Modules {
		g := got.Modules[i]
		require.Equal(tb, m.ID, g.ID)
		require.Equal(tb, want.ID, g.AppID)
		require.Equal(tb, m.Name, g.Name)
		require.Equal(tb, m.Site, g.Site)
		require.JSONEq(tb, string(m.Spec), string(g.Spec))
	}
}

func testAppCreateGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	app, err := s.AppCreate(ctx, store.AppCreateParams{
		Name:   "primes",
		Status: store.AppInitial,
		Spec:   []byte(`{"name":"primes","modules":{"a":{}}}`),
		Modules: []store.ModuleParams{
			{Name: "scatter", Spec: []byte(`{"image":"x"}`)},
			{Name: "calc", Site: "slurm-a", Spec: []byte(`{"image":"y","cores":2}`)},
		},
		Now: T0,
	})
	require.NoError(t, err)
	require.NotZero(t, app.ID)
	require.Equal(t, "primes", app.Name)
	require.Equal(t, store.AppInitial, app.Status)
	require.JSONEq(t, `{"name":"primes","modules":{"a":{}}}`, string(app.Spec))
	requireTime(t, T0, app.CreatedAt, "CreatedAt")
	requireTime(t, T0, app.UpdatedAt, "UpdatedAt")
	require.Len(t, app.Modules, 2)
	require.NotZero(t, app.Modules[0].ID)
	require.NotEqual(t, app.Modules[0].ID, app.Modules[1].ID)
	require.Equal(t, "scatter", app.Modules[0].Name)
	require.Equal(t, "", app.Modules[0].Site)
	require.Equal(t, "calc", app.Modules[1].Name)
	require.Equal(t, "slurm-a", app.Modules[1].Site)
	for _, m := range app.Modules {
		require.Equal(t, app.ID, m.AppID)
	}

	got, err := s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	requireAppEqual(t, app, got)
	requireTime(t, T0, got.UpdatedAt, "UpdatedAt")
}

func testAppCreateDuplicateModule(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.AppCreate(ctx, store.AppCreateParams{
		Name: "dup", Status: store.AppInitial, Spec: []byte(`{}`), Now: T0,
		Modules: []store.ModuleParams{{Name: "m", Spec: []byte(`{}`)}, {Name: "m", Spec: []byte(`{}`)}},
	})
	requireConflict(t, err)
	// One transaction: the app was not created either.
	apps, err := s.AppList(ctx)
	require.NoError(t, err)
	require.Empty(t, apps)
}

func testAppGetNotFound(t *testing.T, s store.Store) {
	_, err := s.AppGet(context.Background(), 424242)
	requireNotFound(t, err)
}

func testAppList(t *testing.T, s store.Store) {
	ctx := context.Background()
	apps, err := s.AppList(ctx)
	require.NoError(t, err)
	require.Empty(t, apps)

	a1 := mustApp(t, s, "first", "x", "y")
	a2 := mustApp(t, s, "second")
	a3 := mustApp(t, s, "third", "z")
	apps, err = s.AppList(ctx)
	require.NoError(t, err)
	require.Len(t, apps, 3)
	// Newest first, with modules.
	requireAppEqual(t, a3, apps[0])
	requireAppEqual(t, a2, apps[1])
	requireAppEqual(t, a1, apps[2])
}

func testAppSetStatus(t *testing.T, s store.Store) {
	ctx := context.Background()
	app := mustApp(t, s, "app", "a")

	require.NoError(t, s.AppSetStatus(ctx, app.ID, store.AppPaused, nil))
	got, err := s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	require.Equal(t, store.AppPaused, got.Status)
	require.Equal(t, "", got.Result)

	result := "all 42 primes found"
	require.NoError(t, s.AppSetStatus(ctx, app.ID, store.AppFinished, &result))
	got, err = s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	require.Equal(t, store.AppFinished, got.Status)
	require.Equal(t, result, got.Result)

	// nil result keeps the text.
	require.NoError(t, s.AppSetStatus(ctx, app.ID, store.AppRunning, nil))
	got, err = s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	require.Equal(t, store.AppRunning, got.Status)
	require.Equal(t, result, got.Result)

	// A non-nil empty result clears it.
	empty := ""
	require.NoError(t, s.AppSetStatus(ctx, app.ID, store.AppCancelled, &empty))
	got, err = s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	require.Equal(t, store.AppCancelled, got.Status)
	require.Equal(t, "", got.Result)

	requireNotFound(t, s.AppSetStatus(ctx, app.ID+1000, store.AppPaused, nil))
}

func testAppTaskCounts(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	counts, err := s.AppTaskCounts(f.ctx, f.app.ID)
	require.NoError(t, err)
	require.Empty(t, counts)

	f.add(t, "a", bodies("a", 5)...)
	f.add(t, "b", bodies("b", 2)...)
	_, err = s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: f.mod["c"], Body: "held", Status: store.StatusInitial},
	}})
	require.NoError(t, err)
	ls := f.lease(t, f.pilot, "a", 3, T0)
	require.Len(t, ls, 3)
	f.complete(t, store.Completion{TaskID: ls[0].TaskID, Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, T0)
	f.complete(t, store.Completion{TaskID: ls[1].TaskID, Attempt: 1, PilotID: f.pilot, Code: 2, Kind: store.KindApp}, nil, T0)

	// Another app's tasks are not counted.
	other := mustApp(t, s, "other", "a")
	_, err = s.TaskAdd(f.ctx, store.TaskAddParams{AppID: other.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: other.Modules[0].ID, Body: "x", Status: store.StatusReady},
	}})
	require.NoError(t, err)

	counts, err = s.AppTaskCounts(f.ctx, f.app.ID)
	require.NoError(t, err)
	sortStatusCounts(counts)
	want := []store.StatusCount{
		{ModuleID: f.mod["a"], Status: store.StatusQueued, Count: 1},
		{ModuleID: f.mod["a"], Status: store.StatusReady, Count: 2},
		{ModuleID: f.mod["a"], Status: store.StatusOK, Count: 1},
		{ModuleID: f.mod["a"], Status: 2, Count: 1},
		{ModuleID: f.mod["b"], Status: store.StatusReady, Count: 2},
		{ModuleID: f.mod["c"], Status: store.StatusInitial, Count: 1},
	}
	sortStatusCounts(want)
	require.Equal(t, want, counts)

	counts, err = s.AppTaskCounts(f.ctx, other.ID)
	require.NoError(t, err)
	require.Equal(t, []store.StatusCount{{ModuleID: other.Modules[0].ID, Status: store.StatusReady, Count: 1}}, counts)

	// An unknown app has no tasks.
	counts, err = s.AppTaskCounts(f.ctx, other.ID+1000)
	require.NoError(t, err)
	require.Empty(t, counts)
}
