package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

var taskLeaseTests = []namedTest{
	{"OldestFirst", testLeaseOldestFirst},
	{"NothingToLease", testLeaseNothing},
	{"SeveralModules", testLeaseSeveralModules},
	{"HostBound", testLeaseHostBound},
	{"AttemptIncrements", testLeaseAttemptIncrements},
	{"Concurrent", testLeaseConcurrent},
}

var taskHeartbeatTests = []namedTest{
	{"RenewAndRunning", testHeartbeatRenewAndRunning},
	{"Reconcile", testHeartbeatReconcile},
	{"Stale", testHeartbeatStale},
}

func testLeaseOldestFirst(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: f.mod["a"], Body: "t1", Headers: `{"x":"1"}`, Status: store.StatusReady},
		{ModuleID: f.mod["a"], Body: "t2", Status: store.StatusReady},
		{ModuleID: f.mod["a"], Body: "t3", Status: store.StatusReady},
		{ModuleID: f.mod["a"], Body: "t4", Status: store.StatusReady},
		{ModuleID: f.mod["a"], Body: "t5", Status: store.StatusReady},
	}})
	require.NoError(t, err)
	ids := res.IDs

	now := at(time.Second)
	ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{
		PilotID: f.pilot,
		Modules: []store.ModuleLease{{ModuleID: f.mod["a"], Max: 2}},
		TTL:     90 * time.Second,
		Now:     now,
	})
	require.NoError(t, err)
	require.Equal(t, ids[:2], leaseIDs(ls))
	l := ls[0]
	require.Equal(t, f.app.ID, l.AppID)
	require.Equal(t, f.mod["a"], l.ModuleID)
	require.Equal(t, "t1", l.Body)
	require.JSONEq(t, `{"x":"1"}`, l.Headers)
	require.Equal(t, 1, l.Attempt)
	requireTime(t, T0, l.CreatedAt, "CreatedAt")
	requireTime(t, now, l.LeasedAt, "LeasedAt")
	requireTime(t, now.Add(90*time.Second), l.Expires, "Expires")
	require.Equal(t, "{}", ls[1].Headers)

	task := f.get(t, ids[0])
	require.Equal(t, store.StatusQueued, task.Status)
	require.Equal(t, 1, task.Attempt)
	require.Equal(t, f.pilot, task.PilotID)
	requireTime(t, now, task.LeasedAt, "LeasedAt")
	requireTime(t, now.Add(90*time.Second), task.LeaseExpires, "LeaseExpires")
	requireTime(t, now, task.UpdatedAt, "UpdatedAt")
	requireTime(t, T0, task.CreatedAt, "CreatedAt")
	// Leasing records no attempt row.
	require.Empty(t, f.attempts(t, ids[0]))

	// Leased tasks are not leased again.
	ls = f.lease(t, f.pilot, "a", 10, now)
	require.Equal(t, ids[2:], leaseIDs(ls))
	for _, l := range ls {
		require.Equal(t, 1, l.Attempt)
	}
	require.Empty(t, f.lease(t, f.pilot, "a", 10, now))
}

func testLeaseNothing(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	// No tasks at all.
	require.Empty(t, f.lease(t, f.pilot, "a", 10, T0))
	// INITIAL tasks are not dispatchable.
	_, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: f.mod["a"], Body: "held", Status: store.StatusInitial},
	}})
	require.NoError(t, err)
	require.Empty(t, f.lease(t, f.pilot, "a", 10, T0))
	// Max 0 leases nothing.
	f.add(t, "a", "ready")
	require.Empty(t, f.lease(t, f.pilot, "a", 0, T0))
	// No modules, another module, an unknown module.
	ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{PilotID: f.pilot, TTL: time.Minute, Now: T0})
	require.NoError(t, err)
	require.Empty(t, ls)
	require.Empty(t, f.lease(t, f.pilot, "b", 10, T0))
	ls, err = s.TaskLease(f.ctx, store.TaskLeaseParams{PilotID: f.pilot, TTL: time.Minute, Now: T0,
		Modules: []store.ModuleLease{{ModuleID: 999999, Max: 5}}})
	require.NoError(t, err)
	require.Empty(t, ls)
	// The READY task is still there.
	require.Len(t, f.lease(t, f.pilot, "a", 10, T0), 1)
}

func testLeaseSeveralModules(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	a := f.add(t, "a", "a1", "a2", "a3")
	b := f.add(t, "b", "b1", "b2", "b3")
	c := f.add(t, "c", "c1")
	ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{
		PilotID: f.pilot,
		Modules: []store.ModuleLease{
			{ModuleID: f.mod["b"], Max: 1},
			{ModuleID: f.mod["a"], Max: 2},
		},
		TTL: time.Minute,
		Now: T0,
	})
	require.NoError(t, err)
	byModule := map[int64][]int64{}
	for _, l := range ls {
		byModule[l.ModuleID] = append(byModule[l.ModuleID], l.TaskID)
	}
	require.Len(t, ls, 3)
	require.Equal(t, a[:2], byModule[f.mod["a"]])
	require.Equal(t, b[:1], byModule[f.mod["b"]])
	require.Equal(t, store.StatusReady, f.get(t, c[0]).Status)
}

func testLeaseHostBound(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	a := f.mod["a"]
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: f.app.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: a, Body: "any1", Status: store.StatusReady},
		{ModuleID: a, Body: "on-n1", Status: store.StatusReady, ToHost: "n1"},
		{ModuleID: a, Body: "on-10.0.0.2", Status: store.StatusReady, ToHost: "10.0.0.2"},
		{ModuleID: a, Body: "any2", Status: store.StatusReady},
		{ModuleID: a, Body: "on-n1-again", Status: store.StatusReady, ToHost: "n1"},
	}})
	require.NoError(t, err)
	ids := res.IDs
	p2 := mustPilot(t, s, "local", "n2", T0)
	p3 := mustPilot(t, s, "local", "n3", T0)

	leaseAs := func(pilot int64, hosts []string, max int) []int64 {
		t.Helper()
		ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{
			PilotID: pilot, Hosts: hosts, TTL: time.Minute, Now: T0,
			Modules: []store.ModuleLease{{ModuleID: a, Max: max}},
		})
		require.NoError(t, err)
		return leaseIDs(ls)
	}
	// A pilot on n2 (without hosts or with other names) gets only unbound tasks.
	require.Equal(t, []int64{ids[0]}, leaseAs(p2, []string{"n2", "10.0.0.9"}, 1))
	// The pilot that lists n1 among its names gets its tasks, oldest first,
	// mixed with unbound ones.
	require.Equal(t, []int64{ids[1], ids[3]}, leaseAs(f.pilot, []string{"n1.cluster", "n1"}, 2))
	require.Empty(t, leaseAs(p2, nil, 10))
	require.Empty(t, leaseAs(p2, []string{"n2"}, 10))
	require.Equal(t, []int64{ids[2]}, leaseAs(p3, []string{"n3", "10.0.0.2"}, 10))
	require.Equal(t, []int64{ids[4]}, leaseAs(f.pilot, []string{"n1"}, 10))
}

func testLeaseAttemptIncrements(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "x")
	ls := f.lease(t, f.pilot, "a", 1, T0)
	require.Equal(t, 1, ls[0].Attempt)

	n, err := s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, All: true, Now: at(time.Second)})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	ls = f.lease(t, f.pilot, "a", 1, at(2*time.Second))
	require.Equal(t, ids, leaseIDs(ls))
	require.Equal(t, 2, ls[0].Attempt)

	expired, err := s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: at(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, ids, taskIDs(expired))
	ls = f.lease(t, f.pilot, "a", 1, at(2*time.Hour))
	require.Equal(t, 3, ls[0].Attempt)
	requireTime(t, at(2*time.Hour), ls[0].LeasedAt, "LeasedAt")

	require.Equal(t, 3, f.get(t, ids[0]).Attempt)
}

// testLeaseConcurrent leases from several goroutines: no task is handed out twice.
func testLeaseConcurrent(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	const n = 1000
	ids := f.add(t, "a", bodies("c", n)...)
	const workers = 6
	pilots := make([]int64, workers)
	for i := range pilots {
		pilots[i] = mustPilot(t, s, "local", fmt.Sprintf("w%d", i), T0)
	}

	var (
		mu   sync.Mutex
		got  = map[int64]int64{} // task -> pilot
		dups []int64
		wg   sync.WaitGroup
		errs = make(chan error, workers)
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ls, err := s.TaskLease(context.Background(), store.TaskLeaseParams{
					PilotID: pilots[w],
					Modules: []store.ModuleLease{{ModuleID: f.mod["a"], Max: 7}},
					TTL:     time.Minute,
					Now:     T0,
				})
				if err != nil {
					errs <- err
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					if _, ok := got[l.TaskID]; ok {
						dups = append(dups, l.TaskID)
					}
					got[l.TaskID] = pilots[w]
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Empty(t, dups, "tasks leased twice")
	require.Len(t, got, n)
	for _, id := range ids {
		pilot, ok := got[id]
		require.True(t, ok, "task %d not leased", id)
		task := f.get(t, id)
		require.Equal(t, pilot, task.PilotID)
		require.Equal(t, 1, task.Attempt)
	}
}

func testHeartbeatRenewAndRunning(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2", "t3")
	other := mustPilot(t, s, "local", "n2", T0)
	require.Len(t, f.lease(t, f.pilot, "a", 2, T0), 2)
	require.Len(t, f.lease(t, other, "a", 1, T0), 1)

	now := at(30 * time.Second)
	stale, err := s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{
		PilotID: f.pilot,
		Running: []store.TaskAttempt{{TaskID: ids[0], Attempt: 1}},
		TTL:     2 * time.Minute,
		Now:     now,
	})
	require.NoError(t, err)
	require.Empty(t, stale)

	t1, t2, t3 := f.get(t, ids[0]), f.get(t, ids[1]), f.get(t, ids[2])
	require.Equal(t, store.StatusRunning, t1.Status)
	require.Equal(t, store.StatusQueued, t2.Status)
	// Every lease of the pilot is renewed; the lease time is not.
	requireTime(t, now.Add(2*time.Minute), t1.LeaseExpires, "t1 LeaseExpires")
	requireTime(t, now.Add(2*time.Minute), t2.LeaseExpires, "t2 LeaseExpires")
	requireTime(t, T0, t1.LeasedAt, "t1 LeasedAt")
	require.Equal(t, 1, t1.Attempt)
	// Another pilot's lease is untouched.
	require.Equal(t, store.StatusQueued, t3.Status)
	requireTime(t, T0.Add(time.Minute), t3.LeaseExpires, "t3 LeaseExpires")

	p, err := s.PilotGet(f.ctx, f.pilot)
	require.NoError(t, err)
	requireTime(t, now, p.LastSeen, "LastSeen")
	requireTime(t, T0, p.RegisteredAt, "RegisteredAt")

	// Running again is fine; a renewed lease does not expire at the old time.
	stale, err = s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{
		PilotID: f.pilot,
		Running: []store.TaskAttempt{{TaskID: ids[0], Attempt: 1}, {TaskID: ids[1], Attempt: 1}},
		TTL:     2 * time.Minute,
		Now:     at(time.Minute),
	})
	require.NoError(t, err)
	require.Empty(t, stale)
	require.Equal(t, store.StatusRunning, f.get(t, ids[1]).Status)
	expired, err := s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: at(2 * time.Minute)})
	require.NoError(t, err)
	require.Equal(t, []int64{ids[2]}, taskIDs(expired))
	require.Equal(t, store.StatusRunning, f.get(t, ids[0]).Status)
}

func testHeartbeatStale(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "mine", "theirs", "done", "expired", "unleased")
	other := mustPilot(t, s, "local", "n2", T0)
	require.Equal(t, ids[:1], leaseIDs(f.lease(t, f.pilot, "a", 1, T0)))
	require.Equal(t, ids[1:2], leaseIDs(f.lease(t, other, "a", 1, T0)))
	require.Equal(t, ids[2:4], leaseIDs(f.lease(t, f.pilot, "a", 2, T0)))
	f.complete(t, store.Completion{TaskID: ids[2], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, T0)
	// "expired" is handed back and re-leased to the other pilot.
	_, err := s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, Attempts: []store.TaskAttempt{{TaskID: ids[3], Attempt: 1}}, Now: T0})
	require.NoError(t, err)
	require.Equal(t, ids[3:4], leaseIDs(f.lease(t, other, "a", 1, T0)))

	running := []store.TaskAttempt{
		{TaskID: ids[0], Attempt: 1},  // current
		{TaskID: ids[0], Attempt: 2},  // wrong attempt
		{TaskID: ids[1], Attempt: 1},  // another pilot's lease
		{TaskID: ids[2], Attempt: 1},  // completed
		{TaskID: ids[3], Attempt: 1},  // released and re-leased to another pilot
		{TaskID: ids[4], Attempt: 0},  // never leased
		{TaskID: 9999999, Attempt: 1}, // no such task
	}
	stale, err := s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{PilotID: f.pilot, Running: running, TTL: time.Minute, Now: at(time.Second)})
	require.NoError(t, err)
	require.ElementsMatch(t, running[1:], stale)

	// Stale entries changed nothing.
	require.Equal(t, store.StatusRunning, f.get(t, ids[0]).Status)
	theirs := f.get(t, ids[1])
	require.Equal(t, store.StatusQueued, theirs.Status)
	require.Equal(t, other, theirs.PilotID)
	require.Equal(t, store.StatusOK, f.get(t, ids[2]).Status)
	require.Equal(t, store.StatusQueued, f.get(t, ids[3]).Status)
	require.Equal(t, 2, f.get(t, ids[3]).Attempt)
	require.Equal(t, store.StatusReady, f.get(t, ids[4]).Status)
}

// With Reconcile only the attempts the pilot says it holds are renewed: a
// lease whose grant never reached the pilot runs out.
func testHeartbeatReconcile(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "running", "queued", "lost-grant", "theirs")
	other := mustPilot(t, s, "local", "n2", T0)
	require.Len(t, f.lease(t, f.pilot, "a", 3, T0), 3)
	require.Len(t, f.lease(t, other, "a", 1, T0), 1)

	now := at(30 * time.Second)
	stale, err := s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{
		PilotID:   f.pilot,
		Running:   []store.TaskAttempt{{TaskID: ids[0], Attempt: 1}},
		Held:      []store.TaskAttempt{{TaskID: ids[1], Attempt: 1}, {TaskID: ids[3], Attempt: 1}, {TaskID: ids[1], Attempt: 7}},
		Reconcile: true,
		TTL:       2 * time.Minute,
		Now:       now,
	})
	require.NoError(t, err)
	require.ElementsMatch(t, []store.TaskAttempt{{TaskID: ids[3], Attempt: 1}, {TaskID: ids[1], Attempt: 7}}, stale,
		"another pilot's lease and a wrong attempt are stale")

	running, queued, lost, theirs := f.get(t, ids[0]), f.get(t, ids[1]), f.get(t, ids[2]), f.get(t, ids[3])
	require.Equal(t, store.StatusRunning, running.Status)
	requireTime(t, now.Add(2*time.Minute), running.LeaseExpires, "running LeaseExpires")
	require.Equal(t, store.StatusQueued, queued.Status)
	requireTime(t, now.Add(2*time.Minute), queued.LeaseExpires, "queued LeaseExpires")
	requireTime(t, T0.Add(time.Minute), lost.LeaseExpires, "a lease the pilot does not hold is not renewed")
	requireTime(t, T0.Add(time.Minute), theirs.LeaseExpires, "another pilot's lease is untouched")
	require.Equal(t, other, theirs.PilotID)

	// updated_at is when the attempt became RUNNING: later heartbeats keep
	// it (the broker's stuck-task timeout counts from it).
	requireTime(t, now, running.UpdatedAt, "running UpdatedAt")
	_, err = s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{PilotID: f.pilot, Running: []store.TaskAttempt{{TaskID: ids[0], Attempt: 1}},
		Reconcile: true, TTL: 2 * time.Minute, Now: at(40 * time.Second)})
	require.NoError(t, err)
	requireTime(t, now, f.get(t, ids[0]).UpdatedAt, "running UpdatedAt after another heartbeat")

	expired, err := s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: at(time.Minute + time.Second)})
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{ids[2], ids[3]}, taskIDs(expired))
}
