package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/schema"
	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/postgres"
)

// Tests beyond the conformance suite: PostgreSQL specifics (migrations,
// concurrency between connections, planner robustness, input limits).

func newApp(t *testing.T, s store.Store, modules ...string) *store.App {
	t.Helper()
	p := store.AppCreateParams{Name: "app", Status: store.AppRunning}
	for _, m := range modules {
		p.Modules = append(p.Modules, store.ModuleParams{Name: m})
	}
	app, err := s.AppCreate(context.Background(), p)
	require.NoError(t, err)
	return app
}

func TestOpenMigratesOnce(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	// Concurrent first Opens serialise on the advisory lock.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := postgres.Open(ctx, dsn)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	s, err := postgres.Open(ctx, dsn)
	require.NoError(t, err)
	defer s.Close()
	var n int
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n))
	all, err := schema.Migrations("postgres")
	require.NoError(t, err)
	require.Equal(t, len(all), n, "each migration recorded once")

	// A database migrated by a newer program is refused.
	_, err = s.Pool().Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES (999, 'future')")
	require.NoError(t, err)
	_, err = postgres.Open(ctx, dsn)
	require.ErrorContains(t, err, "newer")
}

func TestOpenBadDSN(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	require.Error(t, err)
	_, err = postgres.Open(context.Background(), "::not a dsn::")
	require.Error(t, err)
}

// TestTaskAddConcurrentOverlap adds overlapping batches from several
// connections at once: every (module, body) ends up as one task and every
// caller gets its id.
func TestTaskAddConcurrentOverlap(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app := newApp(t, s, "a")
	mod := app.Modules[0].ID
	const n, workers = 2000, 4
	results := make([]*store.TaskAddResult, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := make([]store.TaskInput, 0, n)
			for i := range n {
				// Each worker shares half of its bodies with the next one.
				in = append(in, store.TaskInput{ModuleID: mod, Body: fmt.Sprintf("b-%d", w*n/2+i), Status: store.StatusReady})
			}
			results[w], errs[w] = s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
		}()
	}
	wg.Wait()
	ids := map[string]int64{}
	inserted := 0
	for w := range workers {
		require.NoError(t, errs[w])
		inserted += results[w].Inserted
		for i, id := range results[w].IDs {
			body := fmt.Sprintf("b-%d", w*n/2+i)
			if prev, ok := ids[body]; ok {
				require.Equal(t, prev, id, "body %s", body)
			}
			ids[body] = id
		}
	}
	require.Len(t, ids, (workers+1)*n/2)
	require.Equal(t, len(ids), inserted, "each task inserted once")
	var count int
	require.NoError(t, s.Pool().QueryRow(ctx, "SELECT count(*) FROM tasks").Scan(&count))
	require.Equal(t, len(ids), count)
}

// TestLongBodies stores bodies far beyond the btree row limit (about 2.7 kB):
// the unique index is on md5(body).
func TestLongBodies(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app := newApp(t, s, "a")
	long := strings.Repeat("x", 1<<20) + "tail"
	in := []store.TaskInput{{ModuleID: app.Modules[0].ID, Body: long, Status: store.StatusReady}}
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
	require.NoError(t, err)
	again, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
	require.NoError(t, err)
	require.Equal(t, res.IDs, again.IDs)
	require.Equal(t, []bool{true}, again.Duplicate)
	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 1, TTL: time.Minute,
		Modules: []store.ModuleLease{{ModuleID: app.Modules[0].ID, Max: 1}}})
	require.NoError(t, err)
	require.Len(t, ls, 1)
	require.Equal(t, long, ls[0].Body)
}

// TestCompleteOverwriteOrder: a completion's message overwrites the task a
// later completion of the same call completes. Applied one by one, the
// message finds that task leased (headers replaced only) and the later
// completion then finishes it; it must not be re-queued.
func TestCompleteOverwriteOrder(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app := newApp(t, s, "a")
	mod := app.Modules[0].ID
	res, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: []store.TaskInput{
		{ModuleID: mod, Body: "t1", Status: store.StatusReady},
		{ModuleID: mod, Body: "t2", Status: store.StatusReady},
	}})
	require.NoError(t, err)
	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 7, TTL: time.Minute, Modules: []store.ModuleLease{{ModuleID: mod, Max: 2}}})
	require.NoError(t, err)
	require.Len(t, ls, 2)
	out, err := s.TaskComplete(ctx, store.TaskCompleteParams{
		Conflict: store.ConflictOverwrite,
		Completions: []store.Completion{
			{TaskID: res.IDs[0], Attempt: 1, PilotID: 7, Kind: store.KindApp,
				Messages: []store.TaskInput{{ModuleID: mod, Body: "t2", Headers: `{"from":"t1"}`, Status: store.StatusReady}}},
			{TaskID: res.IDs[1], Attempt: 1, PilotID: 7, Kind: store.KindApp},
		},
	})
	require.NoError(t, err)
	require.Equal(t, []store.CompleteResult{
		{Applied: true, Status: store.StatusOK, Duplicates: 1},
		{Applied: true, Status: store.StatusOK},
	}, out)
	t2, err := s.TaskGet(ctx, res.IDs[1])
	require.NoError(t, err)
	require.Equal(t, store.StatusOK, t2.Status)
	require.JSONEq(t, `{"from":"t1"}`, t2.Headers)
}

// TestBadInputs: invalid input is an error, never a panic or a partial write.
func TestBadInputs(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app := newApp(t, s, "a")
	mod := app.Modules[0].ID

	_, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: []store.TaskInput{
		{ModuleID: mod, Body: "ok", Status: store.StatusReady},
		{ModuleID: mod, Body: "nul\x00byte", Status: store.StatusReady},
	}})
	require.Error(t, err)
	_, err = s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: []store.TaskInput{{ModuleID: mod, Body: "x", Status: math.MaxInt32 + 1}}})
	require.Error(t, err)
	_, err = s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Conflict: "MERGE", Tasks: []store.TaskInput{{ModuleID: mod, Body: "x"}}})
	require.Error(t, err)
	_, err = s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: []store.TaskInput{{ModuleID: mod, Body: "bad utf8 \xff", Status: store.StatusReady}}})
	require.Error(t, err)
	tasks, err := s.TaskList(ctx, store.TaskFilter{})
	require.NoError(t, err)
	require.Empty(t, tasks, "failed calls wrote nothing")

	_, err = s.TaskComplete(ctx, store.TaskCompleteParams{Completions: []store.Completion{{TaskID: 1, Attempt: 1, Kind: "bogus"}}})
	require.Error(t, err)
	_, err = s.TaskComplete(ctx, store.TaskCompleteParams{Completions: []store.Completion{{TaskID: 1, Attempt: 1, Code: math.MinInt64}}})
	require.Error(t, err)
	_, err = s.PilotRegister(ctx, nil)
	require.Error(t, err)
	require.Error(t, s.SitePut(ctx, nil))
	require.Error(t, s.TokenCreate(ctx, nil))

	// Out-of-range numbers that cannot match anything are simply not found.
	stale, err := s.TaskHeartbeat(ctx, store.TaskHeartbeatParams{PilotID: 1, TTL: time.Minute,
		Running: []store.TaskAttempt{{TaskID: -1, Attempt: math.MaxInt64}}})
	require.NoError(t, err)
	require.Len(t, stale, 1)
	n, err := s.TaskRelease(ctx, store.TaskReleaseParams{PilotID: 1, Attempts: []store.TaskAttempt{{TaskID: 1, Attempt: math.MinInt64}}})
	require.NoError(t, err)
	require.Zero(t, n)
	big := math.MaxInt32 + 5
	tasks, err = s.TaskList(ctx, store.TaskFilter{Status: &big, Limit: math.MaxInt})
	require.NoError(t, err)
	require.Empty(t, tasks)
	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 1, TTL: -time.Hour,
		Modules: []store.ModuleLease{{ModuleID: mod, Max: math.MaxInt}, {ModuleID: mod, Max: math.MaxInt}}})
	require.NoError(t, err)
	require.Empty(t, ls)
	_, err = s.AttemptList(ctx, -5)
	require.NoError(t, err)
}

// TestTimes: times are kept to the microsecond, truncated, and come back
// in UTC; a zero Now is the current time.
func TestTimes(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	zone := time.FixedZone("X", -7*3600)
	when := time.Date(2030, 1, 2, 3, 4, 5, 999999999, zone)
	app, err := s.AppCreate(ctx, store.AppCreateParams{Name: "a", Now: when})
	require.NoError(t, err)
	got, err := s.AppGet(ctx, app.ID)
	require.NoError(t, err)
	require.Equal(t, time.UTC, got.CreatedAt.Location())
	require.True(t, got.CreatedAt.Equal(when.Truncate(time.Microsecond)), "%s", got.CreatedAt)
	require.Equal(t, app.CreatedAt, got.CreatedAt)

	before := time.Now().Add(-time.Second)
	other, err := s.AppCreate(ctx, store.AppCreateParams{Name: "b"})
	require.NoError(t, err)
	require.True(t, other.CreatedAt.After(before))
}

// TestContextCancelled: a cancelled context is an error, not a hang.
func TestContextCancelled(t *testing.T) {
	s := open(t)
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.AppList(ctx)
	require.Error(t, err)
	require.True(t, errors.Is(err, context.Canceled), "%v", err)
	_, err = s.TaskAdd(ctx, store.TaskAddParams{AppID: 1, Tasks: []store.TaskInput{{ModuleID: 1, Body: "x"}}})
	require.Error(t, err)
}

// TestErrorsWrapSentinels: driver errors are translated.
func TestErrorsWrapSentinels(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	_, err := s.TaskGet(ctx, 1)
	require.ErrorIs(t, err, store.ErrNotFound)
	require.NotErrorIs(t, err, pgx.ErrNoRows, "the driver error is not leaked through the chain")
	require.NoError(t, s.TokenCreate(ctx, &store.Token{Hash: "h", Name: "n", Role: store.RoleUser}))
	require.ErrorIs(t, s.TokenCreate(ctx, &store.Token{Hash: "h", Name: "n", Role: store.RoleUser}), store.ErrConflict)
}

// TestTaskAddOppositeOrders adds the same bodies from two connections in
// opposite orders, which can deadlock; the deadlock victim is retried.
func TestTaskAddOppositeOrders(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app := newApp(t, s, "a")
	mod := app.Modules[0].ID
	const n = 3000
	var wg sync.WaitGroup
	results := make([]*store.TaskAddResult, 2)
	errs := make([]error, 2)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := make([]store.TaskInput, n)
			for i := range in {
				k := i
				if w == 1 {
					k = n - 1 - i
				}
				in[i] = store.TaskInput{ModuleID: mod, Body: fmt.Sprintf("x-%d", k), Status: store.StatusReady}
			}
			results[w], errs[w] = s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
		}()
	}
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Equal(t, n, results[0].Inserted+results[1].Inserted)
	for i := range n {
		require.Equal(t, results[0].IDs[i], results[1].IDs[n-1-i])
	}
}

// TestHeartbeatDuringCompletes heartbeats a pilot's leases while its
// results are completed in batches (listed in reverse order). Both lock the
// pilot's rows in id order, so they cannot deadlock; this stress test
// checks that neither fails (a deadlock needs a heap order other than id
// order, which this setup does not produce reliably).
func TestHeartbeatDuringCompletes(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	defer s.Close()
	app := newApp(t, s, "a")
	mod := app.Modules[0].ID
	in := make([]store.TaskInput, 1000)
	for i := range in {
		in[i] = store.TaskInput{ModuleID: mod, Body: fmt.Sprint(i), Status: store.StatusReady}
	}
	_, err := s.TaskAdd(ctx, store.TaskAddParams{AppID: app.ID, Tasks: in})
	require.NoError(t, err)
	ls, err := s.TaskLease(ctx, store.TaskLeaseParams{PilotID: 3, TTL: time.Hour, Modules: []store.ModuleLease{{ModuleID: mod, Max: len(in)}}})
	require.NoError(t, err)
	require.Len(t, ls, len(in))

	done := make(chan struct{})
	hbErr := make(chan error, 1)
	go func() {
		defer close(hbErr)
		for {
			select {
			case <-done:
				return
			default:
			}
			running := make([]store.TaskAttempt, 0, len(ls))
			for _, l := range ls {
				running = append(running, store.TaskAttempt{TaskID: l.TaskID, Attempt: l.Attempt})
			}
			if _, err := s.TaskHeartbeat(ctx, store.TaskHeartbeatParams{PilotID: 3, TTL: time.Hour, Running: running}); err != nil {
				hbErr <- err
				return
			}
		}
	}()
	for end := len(ls); end > 0; end -= 50 {
		var cs []store.Completion
		for i := end - 1; i >= end-50; i-- {
			cs = append(cs, store.Completion{TaskID: ls[i].TaskID, Attempt: ls[i].Attempt, PilotID: 3})
		}
		res, err := s.TaskComplete(ctx, store.TaskCompleteParams{Completions: cs})
		require.NoError(t, err)
		for _, r := range res {
			require.True(t, r.Applied)
		}
	}
	close(done)
	require.NoError(t, <-hbErr)
}
