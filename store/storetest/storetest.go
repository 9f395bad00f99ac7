// Package storetest is the one conformance suite every store.Store
// implementation must pass (store/sqlite, store/postgres).
//
// Run exercises every method against the semantics documented in package
// store; Bench measures the hot paths (lease + complete, bulk add). Both take
// an opener that returns a fresh, empty store:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "db"))
//			require.NoError(t, err)
//			return s
//		})
//	}
//
// Run closes every store it opens when the subtest ends; cleanups the opener
// registers (dropping a database) run after that. The opener is called from
// parallel subtests and must be safe for concurrent use.
//
// All times the suite passes in are derived from a fixed instant with a
// nanosecond part, and are compared after truncation to microseconds, the
// precision every store keeps (user timestamps of attempts included).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

// Run runs the conformance suite against the stores open returns.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	groups := []struct {
		name  string
		tests []namedTest
	}{
		{"Apps", appTests},
		{"TaskAdd", taskAddTests},
		{"TaskList", taskListTests},
		{"TaskLease", taskLeaseTests},
		{"TaskHeartbeat", taskHeartbeatTests},
		{"TaskComplete", taskCompleteTests},
		{"TaskRelease", taskReleaseTests},
		{"TaskExpireLeases", taskExpireTests},
		{"Pilots", pilotTests},
		{"Sites", siteTests},
		{"PilotJobs", pilotJobTests},
		{"Semaphores", semaphoreTests},
		{"Variables", variableTests},
		{"Tokens", tokenTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range g.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					s := open(t)
					require.NotNil(t, s, "open returned a nil store")
					t.Cleanup(func() {
						if err := s.Close(); err != nil {
							t.Errorf("close store: %v", err)
						}
					})
					tc.fn(t, s)
				})
			}
		})
	}
}

type namedTest struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// T0 is the suite's fixed "now". Its nanosecond part checks that stores
// truncate (not round) to microseconds.
var T0 = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)

// at returns T0 + d.
func at(d time.Duration) time.Time { return T0.Add(d) }

// requireTime asserts that got is want truncated to microseconds (zero stays
// zero).
func requireTime(tb testing.TB, want, got time.Time, what string) {
	tb.Helper()
	if want.IsZero() {
		require.Truef(tb, got.IsZero(), "%s: want zero time, got %s", what, got)
		return
	}
	w := want.Truncate(time.Microsecond)
	require.Truef(tb, w.Equal(got), "%s: want %s, got %s", what, w.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano))
}

// requireNotFound asserts err wraps store.ErrNotFound.
func requireNotFound(tb testing.TB, err error) {
	tb.Helper()
	require.Error(tb, err)
	require.Truef(tb, errors.Is(err, store.ErrNotFound), "want ErrNotFound, got %v", err)
}

// requireConflict asserts err wraps store.ErrConflict.
func requireConflict(tb testing.TB, err error) {
	tb.Helper()
	require.Error(tb, err)
	require.Truef(tb, errors.Is(err, store.ErrConflict), "want ErrConflict, got %v", err)
}

// fixture is an app with modules and a registered pilot.
type fixture struct {
	s     store.Store
	ctx   context.Context
	app   *store.App
	mod   map[string]int64
	pilot int64
}

// newFixture creates app "app" with modules "a", "b" and "c" and one pilot.
func newFixture(tb testing.TB, s store.Store) *fixture {
	tb.Helper()
	ctx := context.Background()
	app := mustApp(tb, s, "app", "a", "b", "c")
	f := &fixture{s: s, ctx: ctx, app: app, mod: map[string]int64{}}
	for _, m := range app.Modules {
		f.mod[m.Name] = m.ID
	}
	f.pilot = mustPilot(tb, s, "local", "n1", T0)
	return f
}

// mustApp creates an app with the named modules at T0.
func mustApp(tb testing.TB, s store.Store, name string, modules ...string) *store.App {
	tb.Helper()
	p := store.AppCreateParams{
		Name:   name,
		Status: store.AppRunning,
		Spec:   []byte(`{"name":"` + name + `"}`),
		Now:    T0,
	}
	for _, m := range modules {
		p.Modules = append(p.Modules, store.ModuleParams{Name: m, Spec: []byte(`{"name":"` + m + `"}`)})
	}
	app, err := s.AppCreate(context.Background(), p)
	require.NoError(tb, err, "create app")
	require.Len(tb, app.Modules, len(modules))
	return app
}

// mustPilot registers an ACTIVE pilot.
func mustPilot(tb testing.TB, s store.Store, site, host string, now time.Time) int64 {
	tb.Helper()
	p, err := s.PilotRegister(context.Background(), &store.Pilot{
		Site: site, Host: host, IP: "10.0.0.1", Cores: 2, MemoryMB: 1024,
		Slots: `{"a":1}`, RegisteredAt: now,
	})
	require.NoError(tb, err, "register pilot")
	require.NotZero(tb, p.ID)
	return p.ID
}

// add inserts READY tasks with the given bodies into module mod and returns
// their ids.
func (f *fixture) add(tb testing.TB, mod string, bodies ...string) []int64 {
	tb.Helper()
	in := make([]store.TaskInput, len(bodies))
	for i, b := range bodies {
		in[i] = store.TaskInput{ModuleID: f.mod[mod], Body: b, Status: store.StatusReady}
	}
	res, err := f.s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Tasks: in, Now: T0})
	require.NoError(tb, err, "add tasks")
	require.Len(tb, res.IDs, len(bodies))
	return res.IDs
}

// lease leases up to n tasks of module mod to pilot at now with a one-minute TTL.
func (f *fixture) lease(tb testing.TB, pilot int64, mod string, n int, now time.Time) []*store.Lease {
	tb.Helper()
	ls, err := f.s.TaskLease(f.ctx, store.TaskLeaseParams{
		PilotID: pilot,
		Modules: []store.ModuleLease{{ModuleID: f.mod[mod], Max: n}},
		TTL:     time.Minute,
		Now:     now,
	})
	require.NoError(tb, err, "lease")
	return ls
}

// complete completes one attempt with code (kind app) and returns its result.
func (f *fixture) complete(tb testing.TB, c store.Completion, policy store.RetryPolicy, now time.Time) store.CompleteResult {
	tb.Helper()
	res, err := f.s.TaskComplete(f.ctx, store.TaskCompleteParams{
		Completions: []store.Completion{c},
		Policy:      policy,
		Now:         now,
	})
	require.NoError(tb, err, "complete")
	require.Len(tb, res, 1)
	return res[0]
}

// get returns a task.
func (f *fixture) get(tb testing.TB, id int64) *store.Task {
	tb.Helper()
	task, err := f.s.TaskGet(f.ctx, id)
	require.NoError(tb, err, "get task %d", id)
	return task
}

// attempts returns a task's attempt rows.
func (f *fixture) attempts(tb testing.TB, id int64) []*store.Attempt {
	tb.Helper()
	as, err := f.s.AttemptList(f.ctx, id)
	require.NoError(tb, err, "list attempts of %d", id)
	return as
}

// leaseIDs returns the task ids of leases.
func leaseIDs(ls []*store.Lease) []int64 {
	ids := make([]int64, len(ls))
	for i, l := range ls {
		ids[i] = l.TaskID
	}
	return ids
}

// taskIDs returns the ids of tasks.
func taskIDs(ts []*store.Task) []int64 {
	ids := make([]int64, len(ts))
	for i, t := range ts {
		ids[i] = t.ID
	}
	return ids
}

// bodies makes n distinct bodies with a prefix.
func bodies(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%06d", prefix, i)
	}
	return out
}

// policyCall is one recorded RetryPolicy call.
type policyCall struct {
	ModuleID      int64
	Code          int
	Kind          string
	AppFailures   int
	InfraFailures int
}

// recordingPolicy records its calls and answers with next.
type recordingPolicy struct {
	calls []policyCall
	next  func(c policyCall) int
}

func (p *recordingPolicy) Next(moduleID int64, code int, kind string, appFailures, infraFailures int) int {
	c := policyCall{moduleID, code, kind, appFailures, infraFailures}
	p.calls = append(p.calls, c)
	return p.next(c)
}

// retryUpTo retries until a budget of failures of the attempt's kind is spent.
func retryUpTo(n int) *recordingPolicy {
	return &recordingPolicy{next: func(c policyCall) int {
		spent := c.AppFailures
		if c.Kind == store.KindInfra {
			spent = c.InfraFailures
		}
		if c.Code != store.StatusOK && spent < n {
			return store.StatusReady
		}
		return c.Code
	}}
}

// sortStatusCounts orders counts by module, then status.
func sortStatusCounts(cs []store.StatusCount) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].ModuleID != cs[j].ModuleID {
			return cs[i].ModuleID < cs[j].ModuleID
		}
		return cs[i].Status < cs[j].Status
	})
}
