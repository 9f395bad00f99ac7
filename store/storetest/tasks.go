package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

var taskAddTests = []namedTest{
	{"Insert", testTaskAddInsert},
	{"Empty", testTaskAddEmpty},
	{"DuplicatesWithinCall", testTaskAddDuplicatesWithinCall},
	{"DuplicatesAcrossCalls", testTaskAddDuplicatesAcrossCalls},
	{"SameBodyOtherModule", testTaskAddSameBodyOtherModule},
	{"Overwrite", testTaskAddOverwrite},
	{"OverwriteWithinCall", testTaskAddOverwriteWithinCall},
	{"Large", testTaskAddLarge},
	{"GetNotFound", testTaskGetNotFound},
}

var taskListTests = []namedTest{
	{"Filters", testTaskListFilters},
	{"Pagination", testTaskListPagination},
	{"Activate", testTaskActivate},
}

// INITIAL tasks become READY on demand: by module, by id, at most a limit,
// oldest first; other statuses are left alone.
func testTaskActivate(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	var mods []string
	for name := range f.mod {
		mods = append(mods, name)
	}
	slices.Sort(mods)
	a, b := mods[0], mods[1]
	initial := func(mod string, bodies ...string) []int64 {
		in := make([]store.TaskInput, len(bodies))
		for i, body := range bodies {
			in[i] = store.TaskInput{ModuleID: f.mod[mod], Body: body, Status: store.StatusInitial}
		}
		res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Tasks: in, Now: T0})
		require.NoError(t, err)
		return res.IDs
	}
	ia := initial(a, "a1", "a2", "a3", "a4")
	ib := initial(b, "b1", "b2")
	ready := f.add(t, a, "r1")
	status := func(id int64) int { return f.get(t, id).Status }

	n, err := s.TaskActivate(f.ctx, store.TaskActivateParams{AppID: f.app.ID, ModuleID: f.mod[a], Limit: 2, Now: at(time.Second)})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, []int{store.StatusReady, store.StatusReady, store.StatusInitial, store.StatusInitial},
		[]int{status(ia[0]), status(ia[1]), status(ia[2]), status(ia[3])}, "oldest first")
	requireTime(t, at(time.Second), f.get(t, ia[0]).UpdatedAt, "UpdatedAt")

	n, err = s.TaskActivate(f.ctx, store.TaskActivateParams{AppID: f.app.ID, IDs: []int64{ia[3], ib[0], ready[0]}, Now: at(time.Second)})
	require.NoError(t, err)
	require.Equal(t, 2, n, "a READY task is left alone")
	require.Equal(t, store.StatusInitial, status(ia[2]))
	require.Equal(t, store.StatusReady, status(ia[3]))
	require.Equal(t, store.StatusReady, status(ib[0]))
	require.Equal(t, store.StatusInitial, status(ib[1]))

	n, err = s.TaskActivate(f.ctx, store.TaskActivateParams{AppID: f.app.ID, Now: at(time.Second)})
	require.NoError(t, err)
	require.Equal(t, 2, n, "the rest of the app")
	n, err = s.TaskActivate(f.ctx, store.TaskActivateParams{AppID: f.app.ID + 1000, Now: at(time.Second)})
	require.NoError(t, err)
	require.Zero(t, n)
}

func testTaskAddInsert(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{
		AppID: f.app.ID,
		Now:   T0,
		Tasks: []store.TaskInput{
			{ModuleID: f.mod["a"], Body: "1", Headers: `{"k":"v","sort_tag":"7"}`, Status: store.StatusReady},
			{ModuleID: f.mod["a"], Body: "2", Status: store.StatusInitial},
			{ModuleID: f.mod["b"], Body: "file with spaces & 'quotes' \"and\" ünïcode", Status: store.StatusReady, ToHost: "n1"},
		},
	})
	require.NoError(t, err)
	require.Equal(t, 3, res.Inserted)
	require.Equal(t, 0, res.Duplicates)
	require.Equal(t, []bool{false, false, false}, res.Duplicate)
	require.Len(t, res.IDs, 3)
	// New tasks get increasing ids in input order.
	require.Positive(t, res.IDs[0])
	require.Less(t, res.IDs[0], res.IDs[1])
	require.Less(t, res.IDs[1], res.IDs[2])

	t1 := f.get(t, res.IDs[0])
	require.Equal(t, res.IDs[0], t1.ID)
	require.Equal(t, f.app.ID, t1.AppID)
	require.Equal(t, f.mod["a"], t1.ModuleID)
	require.Equal(t, "1", t1.Body)
	require.JSONEq(t, `{"k":"v","sort_tag":"7"}`, t1.Headers)
	require.Equal(t, store.StatusReady, t1.Status)
	require.Equal(t, 0, t1.Attempt)
	require.Equal(t, 0, t1.AppFailures)
	require.Equal(t, 0, t1.InfraFailures)
	require.Equal(t, "", t1.ToHost)
	require.Zero(t, t1.PilotID)
	requireTime(t, time.Time{}, t1.LeasedAt, "LeasedAt")
	requireTime(t, time.Time{}, t1.LeaseExpires, "LeaseExpires")
	requireTime(t, T0, t1.CreatedAt, "CreatedAt")
	requireTime(t, T0, t1.UpdatedAt, "UpdatedAt")

	// Empty headers are stored as "{}".
	t2 := f.get(t, res.IDs[1])
	require.Equal(t, "{}", t2.Headers)
	require.Equal(t, store.StatusInitial, t2.Status)

	t3 := f.get(t, res.IDs[2])
	require.Equal(t, f.mod["b"], t3.ModuleID)
	require.Equal(t, "file with spaces & 'quotes' \"and\" ünïcode", t3.Body)
	require.Equal(t, "n1", t3.ToHost)
}

func testTaskAddEmpty(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0})
	require.NoError(t, err)
	require.Empty(t, res.IDs)
	require.Empty(t, res.Duplicate)
	require.Zero(t, res.Inserted)
	require.Zero(t, res.Duplicates)
}

func testTaskAddDuplicatesWithinCall(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	a := f.mod["a"]
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{
		AppID: f.app.ID,
		Now:   T0,
		Tasks: []store.TaskInput{
			{ModuleID: a, Body: "x", Headers: `{"n":"1"}`, Status: store.StatusReady},
			{ModuleID: a, Body: "y", Status: store.StatusReady},
			{ModuleID: a, Body: "x", Headers: `{"n":"2"}`, Status: store.StatusReady},
			{ModuleID: a, Body: "x", Headers: `{"n":"3"}`, Status: store.StatusReady},
		},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{false, false, true, true}, res.Duplicate)
	require.Equal(t, res.IDs[0], res.IDs[2])
	require.Equal(t, res.IDs[0], res.IDs[3])
	require.NotEqual(t, res.IDs[0], res.IDs[1])
	require.Equal(t, 2, res.Inserted)
	require.Equal(t, 2, res.Duplicates)
	// IGNORE (the default) keeps the first.
	require.JSONEq(t, `{"n":"1"}`, f.get(t, res.IDs[0]).Headers)

	all, err := s.TaskList(f.ctx, store.TaskFilter{AppID: f.app.ID})
	require.NoError(t, err)
	require.Len(t, all, 2)
}

func testTaskAddDuplicatesAcrossCalls(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	a := f.mod["a"]
	first, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: a, Body: "x", Headers: `{"v":"old"}`, Status: store.StatusReady},
	}})
	require.NoError(t, err)

	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: at(time.Second), Conflict: store.ConflictIgnore,
		Tasks: []store.TaskInput{
			{ModuleID: a, Body: "new", Status: store.StatusReady},
			{ModuleID: a, Body: "x", Headers: `{"v":"new"}`, Status: store.StatusReady},
		}})
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, res.Duplicate)
	require.Equal(t, first.IDs[0], res.IDs[1])
	require.Greater(t, res.IDs[0], first.IDs[0])
	require.Equal(t, 1, res.Inserted)
	require.Equal(t, 1, res.Duplicates)

	x := f.get(t, first.IDs[0])
	require.JSONEq(t, `{"v":"old"}`, x.Headers)
	requireTime(t, T0, x.CreatedAt, "CreatedAt")
	requireTime(t, T0, x.UpdatedAt, "UpdatedAt")
}

func testTaskAddSameBodyOtherModule(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: f.mod["a"], Body: "same", Status: store.StatusReady},
		{ModuleID: f.mod["b"], Body: "same", Status: store.StatusReady},
	}})
	require.NoError(t, err)
	require.Equal(t, []bool{false, false}, res.Duplicate)
	require.NotEqual(t, res.IDs[0], res.IDs[1])
	require.Equal(t, 2, res.Inserted)

	// Another app's module is just another module.
	other := mustApp(t, s, "other", "a")
	res, err = s.TaskAdd(f.ctx, store.TaskAddParams{AppID: other.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: other.Modules[0].ID, Body: "same", Status: store.StatusReady},
	}})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, res.Duplicate)
	require.Equal(t, other.ID, f.get(t, res.IDs[0]).AppID)
}

func testTaskAddOverwrite(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "ready", "leased", "done", "failed")
	// "leased" and "done", "failed" are leased; "done" succeeds, "failed" fails once and is retried, then fails.
	ls := f.lease(t, f.pilot, "a", 3, T0)
	require.Equal(t, ids[:3], leaseIDs(ls))
	f.complete(t, store.Completion{TaskID: ids[2], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, T0)
	// Release "ready" so it is READY again and take "failed".
	n, err := s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, Attempts: []store.TaskAttempt{{TaskID: ids[0], Attempt: 1}}, Now: T0})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	ls = f.lease(t, f.pilot, "a", 10, T0)
	require.Equal(t, []int64{ids[0], ids[3]}, leaseIDs(ls))
	_, err = s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, Attempts: []store.TaskAttempt{{TaskID: ids[0], Attempt: 2}}, Now: T0})
	require.NoError(t, err)
	f.complete(t, store.Completion{TaskID: ids[3], Attempt: 1, PilotID: f.pilot, Code: 5, Kind: store.KindApp}, nil, T0)

	failed := f.get(t, ids[3])
	require.Equal(t, 5, failed.Status)
	require.Equal(t, 1, failed.AppFailures)

	later := at(time.Hour)
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{
		AppID:    f.app.ID,
		Now:      later,
		Conflict: store.ConflictOverwrite,
		Tasks: []store.TaskInput{
			{ModuleID: f.mod["a"], Body: "ready", Headers: `{"h":"1"}`, Status: store.StatusReady},
			{ModuleID: f.mod["a"], Body: "leased", Headers: `{"h":"2"}`, Status: store.StatusReady},
			{ModuleID: f.mod["a"], Body: "done", Headers: `{"h":"3"}`, Status: store.StatusReady},
			{ModuleID: f.mod["a"], Body: "failed", Headers: `{"h":"4"}`, Status: store.StatusInitial},
			{ModuleID: f.mod["a"], Body: "brand-new", Headers: `{"h":"5"}`, Status: store.StatusReady},
		},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, true, true, false}, res.Duplicate)
	require.Equal(t, ids, res.IDs[:4])
	// New and re-queued tasks are inserted; the non-final ones are duplicates.
	require.Equal(t, 3, res.Inserted)
	require.Equal(t, 2, res.Duplicates)

	// Non-final tasks: headers replaced, nothing else.
	ready := f.get(t, ids[0])
	require.JSONEq(t, `{"h":"1"}`, ready.Headers)
	require.Equal(t, store.StatusReady, ready.Status)
	require.Equal(t, 2, ready.Attempt)

	leased := f.get(t, ids[1])
	require.JSONEq(t, `{"h":"2"}`, leased.Headers)
	require.Equal(t, store.StatusQueued, leased.Status)
	require.Equal(t, f.pilot, leased.PilotID)
	require.Equal(t, 1, leased.Attempt)

	// Final tasks: re-queued with the input's status, attempt kept, counters reset.
	done := f.get(t, ids[2])
	require.JSONEq(t, `{"h":"3"}`, done.Headers)
	require.Equal(t, store.StatusReady, done.Status)
	require.Equal(t, 1, done.Attempt)
	require.Zero(t, done.PilotID)
	requireTime(t, time.Time{}, done.LeaseExpires, "LeaseExpires")
	requireTime(t, later, done.UpdatedAt, "UpdatedAt")
	requireTime(t, T0, done.CreatedAt, "CreatedAt")

	again := f.get(t, ids[3])
	require.JSONEq(t, `{"h":"4"}`, again.Headers)
	require.Equal(t, store.StatusInitial, again.Status)
	require.Equal(t, 1, again.Attempt)
	require.Zero(t, again.AppFailures)
	require.Zero(t, again.InfraFailures)

	// The re-queued READY task is leased with the next attempt number.
	ls = f.lease(t, f.pilot, "a", 10, later)
	require.Equal(t, []int64{ids[0], ids[2], res.IDs[4]}, leaseIDs(ls))
	require.Equal(t, 2, ls[1].Attempt)
	require.Equal(t, 1, ls[2].Attempt)
}

func testTaskAddOverwriteWithinCall(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "final")
	ls := f.lease(t, f.pilot, "a", 1, T0)
	require.Len(t, ls, 1)
	f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, nil, T0)

	a := f.mod["a"]
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{
		AppID:    f.app.ID,
		Now:      T0,
		Conflict: store.ConflictOverwrite,
		Tasks: []store.TaskInput{
			{ModuleID: a, Body: "x", Headers: `{"n":"1"}`, Status: store.StatusReady},
			{ModuleID: a, Body: "final", Headers: `{"n":"a"}`, Status: store.StatusReady},
			{ModuleID: a, Body: "x", Headers: `{"n":"2"}`, Status: store.StatusReady},
			{ModuleID: a, Body: "final", Headers: `{"n":"b"}`, Status: store.StatusReady},
		},
	})
	require.NoError(t, err)
	require.Equal(t, []bool{false, true, true, true}, res.Duplicate)
	require.Equal(t, res.IDs[0], res.IDs[2])
	require.Equal(t, ids[0], res.IDs[1])
	require.Equal(t, ids[0], res.IDs[3])
	// x inserted, final re-queued; the two repeats are duplicates of tasks
	// that are no longer final.
	require.Equal(t, 2, res.Inserted)
	require.Equal(t, 2, res.Duplicates)
	// Later inputs win.
	require.JSONEq(t, `{"n":"2"}`, f.get(t, res.IDs[0]).Headers)
	final := f.get(t, ids[0])
	require.JSONEq(t, `{"n":"b"}`, final.Headers)
	require.Equal(t, store.StatusReady, final.Status)
}

// testTaskAddLarge adds more tasks than one SQL statement can carry, with
// duplicates far apart.
func testTaskAddLarge(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	const n = 12000
	in := make([]store.TaskInput, 0, n+3)
	for _, b := range bodies("large", n) {
		in = append(in, store.TaskInput{ModuleID: f.mod["a"], Body: b, Headers: `{"i":"x"}`, Status: store.StatusReady})
	}
	// Duplicates of early inputs at the end, and of an existing task.
	in = append(in,
		store.TaskInput{ModuleID: f.mod["a"], Body: "large-000000", Status: store.StatusReady},
		store.TaskInput{ModuleID: f.mod["a"], Body: "large-011999", Status: store.StatusReady},
		store.TaskInput{ModuleID: f.mod["b"], Body: "large-000000", Status: store.StatusReady},
	)
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Tasks: in, Now: T0})
	require.NoError(t, err)
	require.Equal(t, n+1, res.Inserted)
	require.Equal(t, 2, res.Duplicates)
	require.Len(t, res.IDs, n+3)
	require.Equal(t, res.IDs[0], res.IDs[n])
	require.Equal(t, res.IDs[n-1], res.IDs[n+1])
	require.True(t, res.Duplicate[n])
	require.True(t, res.Duplicate[n+1])
	require.False(t, res.Duplicate[n+2])
	for i := 1; i < n; i++ {
		require.Less(t, res.IDs[i-1], res.IDs[i], "ids increase in input order")
		require.False(t, res.Duplicate[i])
	}
	require.Less(t, res.IDs[n-1], res.IDs[n+2])

	// Adding them again: all duplicates, same ids.
	again, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Tasks: in, Now: T0})
	require.NoError(t, err)
	require.Equal(t, 0, again.Inserted)
	require.Equal(t, n+3, again.Duplicates)
	require.Equal(t, res.IDs, again.IDs)

	// List is capped at 10000.
	page, err := s.TaskList(f.ctx, store.TaskFilter{AppID: f.app.ID, Limit: 50000})
	require.NoError(t, err)
	require.Len(t, page, 10000)
	require.Equal(t, res.IDs[:10000], taskIDs(page))
}

func testTaskGetNotFound(t *testing.T, s store.Store) {
	_, err := s.TaskGet(t.Context(), 987654)
	requireNotFound(t, err)
}

func testTaskListFilters(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	empty, err := s.TaskList(f.ctx, store.TaskFilter{})
	require.NoError(t, err)
	require.Empty(t, empty)

	a := f.add(t, "a", "a1", "a2", "a3")
	b := f.add(t, "b", "b1", "b2")
	other := mustApp(t, s, "other", "m")
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: other.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: other.Modules[0].ID, Body: "o1", Status: store.StatusInitial},
	}})
	require.NoError(t, err)
	o := res.IDs
	ls := f.lease(t, f.pilot, "a", 1, T0)
	require.Equal(t, a[:1], leaseIDs(ls))

	list := func(fl store.TaskFilter) []int64 {
		t.Helper()
		ts, err := s.TaskList(f.ctx, fl)
		require.NoError(t, err)
		return taskIDs(ts)
	}
	ready, queued, initial := store.StatusReady, store.StatusQueued, store.StatusInitial
	ok := store.StatusOK
	require.Equal(t, append(append(append([]int64{}, a...), b...), o...), list(store.TaskFilter{}))
	require.Equal(t, append(append([]int64{}, a...), b...), list(store.TaskFilter{AppID: f.app.ID}))
	require.Equal(t, o, list(store.TaskFilter{AppID: other.ID}))
	require.Equal(t, b, list(store.TaskFilter{ModuleID: f.mod["b"]}))
	require.Equal(t, b, list(store.TaskFilter{AppID: f.app.ID, ModuleID: f.mod["b"]}))
	require.Empty(t, list(store.TaskFilter{AppID: other.ID, ModuleID: f.mod["b"]}))
	require.Equal(t, append(append([]int64{}, a[1:]...), b...), list(store.TaskFilter{AppID: f.app.ID, Status: &ready}))
	require.Equal(t, a[:1], list(store.TaskFilter{Status: &queued}))
	require.Equal(t, o, list(store.TaskFilter{Status: &initial}))
	require.Empty(t, list(store.TaskFilter{Status: &ok}))
	require.Equal(t, a[1:], list(store.TaskFilter{ModuleID: f.mod["a"], Status: &ready}))

	// Full rows come back.
	ts, err := s.TaskList(f.ctx, store.TaskFilter{Status: &queued})
	require.NoError(t, err)
	require.Len(t, ts, 1)
	got := ts[0]
	require.Equal(t, "a1", got.Body)
	require.Equal(t, f.app.ID, got.AppID)
	require.Equal(t, f.mod["a"], got.ModuleID)
	require.Equal(t, f.pilot, got.PilotID)
	require.Equal(t, 1, got.Attempt)
	requireTime(t, T0, got.LeasedAt, "LeasedAt")
	requireTime(t, T0.Add(time.Minute), got.LeaseExpires, "LeaseExpires")
}

func testTaskListPagination(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", bodies("p", 250)...)
	f.add(t, "b", bodies("q", 10)...)

	// Default limit is 100.
	page, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["a"]})
	require.NoError(t, err)
	require.Equal(t, ids[:100], taskIDs(page))

	var got []int64
	after := int64(0)
	for {
		page, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["a"], AfterID: after, Limit: 7})
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		require.LessOrEqual(t, len(page), 7)
		got = append(got, taskIDs(page)...)
		after = page[len(page)-1].ID
	}
	require.Equal(t, ids, got)

	page, err = s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["a"], AfterID: ids[247]})
	require.NoError(t, err)
	require.Equal(t, ids[248:], taskIDs(page))
}
