package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/schema"
	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
	"github.com/scalebox-hpc/scalebox/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "scalebox.db"))
		require.NoError(t, err)
		return s
	})
}

func TestReopenKeepsData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nested", "dir", "scalebox.db")
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning, Spec: []byte(`{}`),
		Modules: []store.ModuleParams{{Name: "m", Spec: []byte(`{}`)}}, Now: time.Now()})
	require.NoError(t, err)
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: time.Now(),
		Tasks: []store.TaskInput{{ModuleID: app.Modules[0].ID, Body: "x", Status: store.StatusReady}}})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "Close is idempotent")

	s, err = sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	got, err := s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	require.Equal(t, "a", got.Name)
	task, err := s.TaskGet(ctx, res.IDs[0])
	require.NoError(t, err)
	require.Equal(t, "x", task.Body)
}

func TestMigrationsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "scalebox.db")
	for range 2 {
		s, err := sqlite.Open(ctx, path)
		require.NoError(t, err)
		require.NoError(t, s.Close())
	}
	s, err := sqlite.Open(ctx, path)
	require.NoError(t, err)
	defer s.Close()
	versions, err := s.SchemaVersions(ctx)
	require.NoError(t, err)
	ms, err := schema.Migrations("sqlite")
	require.NoError(t, err)
	require.Len(t, versions, len(ms))
	for i, m := range ms {
		require.Equal(t, m.Version, versions[i])
	}
}

func TestMemoryIsTemporary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, ":memory:")
	require.NoError(t, err)
	dir := filepath.Dir(s.Path())
	require.FileExists(t, s.Path())
	_, err = s.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning, Now: time.Now()})
	require.NoError(t, err)
	apps, err := s.AppList(ctx)
	require.NoError(t, err)
	require.Len(t, apps, 1, "reads see the writer's data")
	require.NoError(t, s.Close())
	_, err = os.Stat(dir)
	require.True(t, os.IsNotExist(err), "temporary database removed")
}

// TestReadsDuringWrite checks that reads neither block behind a write
// transaction nor see it before it commits.
func TestReadsDuringWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "scalebox.db"))
	require.NoError(t, err)
	defer s.Close()
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning,
		Modules: []store.ModuleParams{{Name: "m"}}, Now: time.Now()})
	require.NoError(t, err)
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: time.Now(),
		Tasks: []store.TaskInput{{ModuleID: app.Modules[0].ID, Body: "x", Status: store.StatusReady}}})
	require.NoError(t, err)
	pilot, err := s.PilotRegister(ctx, &store.Pilot{Site: "local"})
	require.NoError(t, err)
	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: pilot.ID, TTL: time.Minute, Now: time.Now(),
		Modules: []store.ModuleLease{{ModuleID: app.Modules[0].ID, Max: 1}}})
	require.NoError(t, err)
	require.Len(t, ls, 1)

	// The policy runs inside the completing transaction: hold it there.
	entered, release := make(chan struct{}), make(chan struct{})
	policy := store.RetryFunc(func(_ int64, code int, _ string, _, _ int) int {
		close(entered)
		<-release
		return code
	})
	done := make(chan error, 1)
	go func() {
		_, err := s.TaskComplete(ctx, store.TaskCompleteParams{Policy: policy, Now: time.Now(),
			Completions: []store.Completion{{TaskID: res.IDs[0], Attempt: 1, PilotID: pilot.ID, Code: 0, Kind: store.KindApp}}})
		done <- err
	}()
	<-entered
	task, err := s.TaskGet(ctx, res.IDs[0])
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, task.Status, "uncommitted write is invisible")
	close(release)
	require.NoError(t, <-done)
	task, err = s.TaskGet(ctx, res.IDs[0])
	require.NoError(t, err)
	require.Equal(t, store.StatusOK, task.Status)
}

// TestPanickingPolicyRollsBack checks that a panic inside a write
// transaction leaves the store usable and unchanged.
func TestPanickingPolicyRollsBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "scalebox.db"))
	require.NoError(t, err)
	defer s.Close()
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning,
		Modules: []store.ModuleParams{{Name: "m"}}, Now: time.Now()})
	require.NoError(t, err)
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: time.Now(),
		Tasks: []store.TaskInput{{ModuleID: app.Modules[0].ID, Body: "x", Status: store.StatusReady}}})
	require.NoError(t, err)
	_, err = s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 1, TTL: time.Minute, Now: time.Now(),
		Modules: []store.ModuleLease{{ModuleID: app.Modules[0].ID, Max: 1}}})
	require.NoError(t, err)
	require.Panics(t, func() {
		_, _ = s.TaskComplete(ctx, store.TaskCompleteParams{
			Policy:      store.RetryFunc(func(int64, int, string, int, int) int { panic("policy bug") }),
			Completions: []store.Completion{{TaskID: res.IDs[0], Attempt: 1, PilotID: 1, Kind: store.KindApp}},
		})
	})
	task, err := s.TaskGet(ctx, res.IDs[0])
	require.NoError(t, err)
	require.Equal(t, store.StatusQueued, task.Status)
	r, err := s.TaskComplete(ctx, store.TaskCompleteParams{
		Completions: []store.Completion{{TaskID: res.IDs[0], Attempt: 1, PilotID: 1, Kind: store.KindApp}}})
	require.NoError(t, err)
	require.True(t, r[0].Applied)
}

// TestOddInputs feeds inputs the broker should never send: errors, not panics.
func TestOddInputs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "scalebox.db"))
	require.NoError(t, err)
	defer s.Close()

	_, err = s.TaskAdd(ctx, store.TaskAddParams{AppID: 1, Tasks: []store.TaskInput{{ModuleID: 42, Body: "x"}}})
	require.ErrorIs(t, err, store.ErrNotFound, "unknown app/module")
	require.ErrorIs(t, s.SemaphoreCreate(ctx, 77, "s", 1, ""), store.ErrNotFound, "unknown app")
	_, err = s.PilotRegister(ctx, nil)
	require.Error(t, err)
	require.Error(t, s.SitePut(ctx, nil))
	require.Error(t, s.TokenCreate(ctx, nil))

	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{Modules: []store.ModuleLease{{ModuleID: -1, Max: -5}, {ModuleID: 0, Max: 1 << 40}},
		Hosts: []string{"", "a", "a", "b"}})
	require.NoError(t, err)
	require.Empty(t, ls)
	stale, err := s.TaskHeartbeat(ctx, store.TaskHeartbeatParams{PilotID: -3, Running: []store.TaskAttempt{{TaskID: -1, Attempt: -1}}})
	require.NoError(t, err)
	require.Len(t, stale, 1)
	res, err := s.TaskComplete(ctx, store.TaskCompleteParams{Completions: []store.Completion{{TaskID: 0}, {TaskID: -9}}})
	require.NoError(t, err)
	require.Len(t, res, 2)
	n, err := s.TaskRelease(ctx, store.TaskReleaseParams{All: true})
	require.NoError(t, err)
	require.Zero(t, n)
	ts, err := s.TaskList(ctx, store.TaskFilter{Limit: -1, AfterID: -100})
	require.NoError(t, err)
	require.Empty(t, ts)

	// Bodies with NUL bytes and invalid UTF-8 round-trip and deduplicate.
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Modules: []store.ModuleParams{{Name: "m"}}, Now: time.Now()})
	require.NoError(t, err)
	odd := []string{"a\x00b", "a\x00c", "\xff\xfe", ""}
	in := make([]store.TaskInput, 0, 2*len(odd))
	for range 2 {
		for _, b := range odd {
			in = append(in, store.TaskInput{ModuleID: app.Modules[0].ID, Body: b, Status: store.StatusReady})
		}
	}
	added, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
	require.NoError(t, err)
	require.Equal(t, len(odd), added.Inserted)
	require.Equal(t, len(odd), added.Duplicates)
	for i, b := range odd {
		task, err := s.TaskGet(ctx, added.IDs[i])
		require.NoError(t, err)
		require.Equal(t, b, task.Body)
		require.Equal(t, added.IDs[i], added.IDs[i+len(odd)])
	}
}

// TestGroupCommitIsolatesWrites runs many writes at once, so that they
// share transactions: a write that fails or panics undoes only its own
// work, and every other one is applied.
func TestGroupCommitIsolatesWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "scalebox.db"))
	require.NoError(t, err)
	defer s.Close()
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning,
		Modules: []store.ModuleParams{{Name: "m"}}, Now: time.Now()})
	require.NoError(t, err)
	const n = 60
	in := make([]store.TaskInput, n)
	for i := range in {
		in[i] = store.TaskInput{ModuleID: app.Modules[0].ID, Body: strconv.Itoa(i), Status: store.StatusReady}
	}
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: time.Now(), Tasks: in})
	require.NoError(t, err)
	_, err = s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 1, TTL: time.Minute, Now: time.Now(),
		Modules: []store.ModuleLease{{ModuleID: app.Modules[0].ID, Max: n}}})
	require.NoError(t, err)

	var wg sync.WaitGroup
	outcome := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := store.RetryPolicy(store.NoRetry)
			switch i % 3 {
			case 1:
				p = store.RetryFunc(func(int64, int, string, int, int) int { panic("policy bug") })
			case 2:
				cctx, cancel := context.WithCancel(ctx)
				cancel() // a caller gone before its turn
				_, err := s.TaskComplete(cctx, store.TaskCompleteParams{Policy: p,
					Completions: []store.Completion{{TaskID: res.IDs[i], Attempt: 1, PilotID: 1, Kind: store.KindApp}}})
				outcome[i] = fmt.Sprint(err != nil)
				return
			}
			defer func() {
				if v := recover(); v != nil {
					outcome[i] = "panic"
				}
			}()
			r, err := s.TaskComplete(ctx, store.TaskCompleteParams{Policy: p,
				Completions: []store.Completion{{TaskID: res.IDs[i], Attempt: 1, PilotID: 1, Kind: store.KindApp}}})
			if err == nil && r[0].Applied {
				outcome[i] = "ok"
			}
		}()
	}
	wg.Wait()
	for i := range n {
		task, err := s.TaskGet(ctx, res.IDs[i])
		require.NoError(t, err)
		switch i % 3 {
		case 0:
			require.Equal(t, "ok", outcome[i], "task %d", i)
			require.Equal(t, store.StatusOK, task.Status, "task %d", i)
		case 1:
			require.Equal(t, "panic", outcome[i], "task %d", i)
			require.Equal(t, store.StatusQueued, task.Status, "task %d: a panicking write is undone", i)
		case 2:
			require.Equal(t, "true", outcome[i], "task %d: a cancelled caller gets an error", i)
			require.Equal(t, store.StatusQueued, task.Status, "task %d", i)
		}
	}
}

// TestGroupCommitSharesTransactions holds the writer in one write while
// ten more arrive: they all commit together, in one transaction.
func TestGroupCommitSharesTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "scalebox.db"))
	require.NoError(t, err)
	defer s.Close()
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Status: store.AppRunning,
		Modules: []store.ModuleParams{{Name: "m"}}, Now: time.Now()})
	require.NoError(t, err)
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: time.Now(),
		Tasks: []store.TaskInput{{ModuleID: app.Modules[0].ID, Body: "held", Status: store.StatusReady}}})
	require.NoError(t, err)
	_, err = s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 1, TTL: time.Minute, Now: time.Now(),
		Modules: []store.ModuleLease{{ModuleID: app.Modules[0].ID, Max: 1}}})
	require.NoError(t, err)

	entered, release := make(chan struct{}), make(chan struct{})
	holder := make(chan error, 1)
	go func() {
		_, err := s.TaskComplete(ctx, store.TaskCompleteParams{
			Policy: store.RetryFunc(func(_ int64, code int, _ string, _, _ int) int {
				close(entered)
				<-release
				return code
			}),
			Completions: []store.Completion{{TaskID: res.IDs[0], Attempt: 1, PilotID: 1, Kind: store.KindApp}}})
		holder <- err
	}()
	<-entered
	before := s.Commits()
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Now: time.Now(),
				Tasks: []store.TaskInput{{ModuleID: app.Modules[0].ID, Body: strconv.Itoa(i), Status: store.StatusReady}}})
			assert.NoError(t, err)
		}()
	}
	require.Eventually(t, func() bool { return s.Waiting() == 10 }, 10*time.Second, time.Millisecond)
	close(release)
	wg.Wait()
	require.NoError(t, <-holder)
	require.Equal(t, before+1, s.Commits(), "the ten writes shared one transaction")
	counts, err := s.TaskList(ctx, store.TaskFilter{AppID: app.ID, Limit: 100})
	require.NoError(t, err)
	require.Len(t, counts, 11)
}
