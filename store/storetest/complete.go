package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

var taskCompleteTests = []namedTest{
	{"AppliedRecord", testCompleteAppliedRecord},
	{"ErrorNoRetry", testCompleteErrorNoRetry},
	{"RetryPolicy", testCompleteRetryPolicy},
	{"RetryBackoff", testCompleteRetryBackoff},
	{"InfraKind", testCompleteInfraKind},
	{"Fenced", testCompleteFenced},
	{"FencedAfterReLease", testCompleteFencedAfterReLease},
	{"SameTaskTwiceInOneCall", testCompleteSameTaskTwice},
	{"UnknownTask", testCompleteUnknownTask},
	{"Messages", testCompleteMessages},
	{"MessagesAcrossCompletions", testCompleteMessagesAcrossCompletions},
	{"MessagesOverwrite", testCompleteMessagesOverwrite},
	{"Batch", testCompleteBatch},
}

var taskReleaseTests = []namedTest{
	{"Listed", testReleaseListed},
	{"All", testReleaseAll},
}

var taskExpireTests = []namedTest{
	{"Expire", testExpire},
	{"Policy", testExpirePolicy},
}

// requireUserTimes compares user timestamps at microsecond precision.
func requireUserTimes(tb testing.TB, want, got []store.LabeledTime) {
	tb.Helper()
	require.Len(tb, got, len(want))
	for i := range want {
		requireTime(tb, want[i].Time, got[i].Time, "user timestamp")
		require.Equal(tb, want[i].Label, got[i].Label)
	}
}

func testCompleteAppliedRecord(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	leasedAt := at(time.Second)
	ls := f.lease(t, f.pilot, "a", 1, leasedAt)
	require.Len(t, ls, 1)

	user := []store.LabeledTime{
		{Time: at(11*time.Second + 500*time.Microsecond), Label: "before-sum"},
		{Time: time.Date(2026, 3, 4, 13, 6, 19, 1000, time.FixedZone("CST", 8*3600))},
	}
	extra := map[string]any{
		"runtime": "apptainer",
		"image":   "primes.sif",
		"iobytes": map[string]any{"read": float64(10), "write": float64(20)},
		"flags":   []any{"a", true, nil},
	}
	rec := store.Attempt{
		// Filled by the store; these values must be ignored.
		ID: 777, TaskID: 888, AppID: 999, ModuleID: 111, Attempt: 42, PilotID: 55,
		Kind: "bogus", Code: 99, CreatedAt: at(-time.Hour), LeasedAt: at(-time.Hour), RecordedAt: at(-time.Hour),
		// Kept.
		Host: "n1", Slot: "slot-3", ExitCode: 3, Reason: "exit 3, overridden by task-exec.json",
		Stdout: "out\nline 2", Stderr: "err ✗", CustomText: "user-defined text\nHello",
		BytesRead: 1 << 40, BytesWritten: 12345, InputBytes: 9999, OutputBytes: 999,
		CPUUser: 1500 * time.Millisecond, CPUSystem: 250 * time.Microsecond, MaxRSS: 512 << 20,
		StartedAt:      at(10*time.Second + 111*time.Nanosecond),
		ProgramStart:   at(11 * time.Second),
		ProgramEnd:     at(12 * time.Second),
		ReportedAt:     at(13 * time.Second),
		UserTimestamps: user,
		Extra:          extra,
	}
	now := at(14 * time.Second)
	res, err := s.TaskComplete(f.ctx, store.TaskCompleteParams{
		Completions: []store.Completion{{
			TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp, Record: rec,
		}},
		Now: now,
	})
	require.NoError(t, err)
	require.Equal(t, []store.CompleteResult{{Applied: true, Status: store.StatusOK}}, res)

	task := f.get(t, ids[0])
	require.Equal(t, store.StatusOK, task.Status)
	require.Equal(t, 1, task.Attempt)
	require.Zero(t, task.AppFailures)
	require.Zero(t, task.InfraFailures)
	require.Zero(t, task.PilotID)
	requireTime(t, leasedAt, task.LeasedAt, "LeasedAt")
	requireTime(t, time.Time{}, task.LeaseExpires, "LeaseExpires")
	requireTime(t, now, task.UpdatedAt, "UpdatedAt")

	as := f.attempts(t, ids[0])
	require.Len(t, as, 1)
	a := as[0]
	require.NotZero(t, a.ID)
	require.NotEqual(t, int64(777), a.ID)
	require.Equal(t, ids[0], a.TaskID)
	require.Equal(t, f.app.ID, a.AppID)
	require.Equal(t, f.mod["a"], a.ModuleID)
	require.Equal(t, 1, a.Attempt)
	require.Equal(t, f.pilot, a.PilotID)
	require.Equal(t, store.KindApp, a.Kind)
	require.Equal(t, 0, a.Code)
	require.Equal(t, 3, a.ExitCode)
	require.Equal(t, rec.Host, a.Host)
	require.Equal(t, rec.Slot, a.Slot)
	require.Equal(t, rec.Reason, a.Reason)
	require.Equal(t, rec.Stdout, a.Stdout)
	require.Equal(t, rec.Stderr, a.Stderr)
	require.Equal(t, rec.CustomText, a.CustomText)
	require.Equal(t, rec.BytesRead, a.BytesRead)
	require.Equal(t, rec.BytesWritten, a.BytesWritten)
	require.Equal(t, rec.InputBytes, a.InputBytes)
	require.Equal(t, rec.OutputBytes, a.OutputBytes)
	require.Equal(t, rec.CPUUser, a.CPUUser)
	require.Equal(t, rec.CPUSystem, a.CPUSystem)
	require.Equal(t, rec.MaxRSS, a.MaxRSS)
	requireTime(t, T0, a.CreatedAt, "CreatedAt")
	requireTime(t, leasedAt, a.LeasedAt, "LeasedAt")
	requireTime(t, rec.StartedAt, a.StartedAt, "StartedAt")
	requireTime(t, rec.ProgramStart, a.ProgramStart, "ProgramStart")
	requireTime(t, rec.ProgramEnd, a.ProgramEnd, "ProgramEnd")
	requireTime(t, rec.ReportedAt, a.ReportedAt, "ReportedAt")
	requireTime(t, now, a.RecordedAt, "RecordedAt")
	requireUserTimes(t, user, a.UserTimestamps)
	require.Equal(t, extra, a.Extra)

	// An empty record round-trips as empty.
	ids2 := f.add(t, "a", "t2")
	f.lease(t, f.pilot, "a", 1, now)
	r := f.complete(t, store.Completion{TaskID: ids2[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, now)
	require.True(t, r.Applied)
	as = f.attempts(t, ids2[0])
	require.Len(t, as, 1)
	a = as[0]
	require.Equal(t, "", a.Stdout)
	require.Zero(t, a.CPUUser)
	requireTime(t, time.Time{}, a.StartedAt, "StartedAt")
	requireTime(t, time.Time{}, a.ProgramStart, "ProgramStart")
	requireTime(t, time.Time{}, a.ProgramEnd, "ProgramEnd")
	requireTime(t, time.Time{}, a.ReportedAt, "ReportedAt")
	requireTime(t, now, a.LeasedAt, "LeasedAt")
	require.Empty(t, a.UserTimestamps)
	require.Empty(t, a.Extra)

	// AttemptList of an unknown task is empty.
	none, err := s.AttemptList(f.ctx, 9999999)
	require.NoError(t, err)
	require.Empty(t, none)
}

func testCompleteErrorNoRetry(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	f.lease(t, f.pilot, "a", 1, T0)
	r := f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 3, Kind: store.KindApp}, nil, T0)
	require.Equal(t, store.CompleteResult{Applied: true, Status: 3}, r)
	task := f.get(t, ids[0])
	require.Equal(t, 3, task.Status)
	require.Equal(t, 1, task.AppFailures)
	require.Zero(t, task.InfraFailures)
	require.Zero(t, task.PilotID)
	as := f.attempts(t, ids[0])
	require.Len(t, as, 1)
	require.Equal(t, 3, as[0].Code)
	require.Equal(t, store.KindApp, as[0].Kind)
	// Final: not leased again.
	require.Empty(t, f.lease(t, f.pilot, "a", 1, T0))
}

func testCompleteRetryPolicy(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	mod := f.mod["a"]
	policy := retryUpTo(1)

	f.lease(t, f.pilot, "a", 1, T0)
	r := f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, policy, at(time.Second))
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusReady}, r)
	// Counters before this attempt.
	require.Equal(t, []policyCall{{mod, 1, store.KindApp, 0, 0}}, policy.calls)
	task := f.get(t, ids[0])
	require.Equal(t, store.StatusReady, task.Status)
	require.Equal(t, 1, task.AppFailures)
	require.Equal(t, 1, task.Attempt)
	require.Zero(t, task.PilotID)
	requireTime(t, time.Time{}, task.LeaseExpires, "LeaseExpires")

	// READY again: re-leasable with the next attempt number.
	ls := f.lease(t, f.pilot, "a", 1, at(2*time.Second))
	require.Equal(t, ids, leaseIDs(ls))
	require.Equal(t, 2, ls[0].Attempt)
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 2, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, policy, at(3*time.Second))
	require.Equal(t, store.CompleteResult{Applied: true, Status: 1}, r)
	require.Equal(t, policyCall{mod, 1, store.KindApp, 1, 0}, policy.calls[1])
	task = f.get(t, ids[0])
	require.Equal(t, 1, task.Status)
	require.Equal(t, 2, task.AppFailures)

	as := f.attempts(t, ids[0])
	require.Len(t, as, 2)
	require.Equal(t, 1, as[0].Attempt)
	require.Equal(t, 2, as[1].Attempt)
	requireTime(t, T0, as[0].LeasedAt, "first LeasedAt")
	requireTime(t, at(2*time.Second), as[1].LeasedAt, "second LeasedAt")
	requireTime(t, at(time.Second), as[0].RecordedAt, "first RecordedAt")

	// A success is passed to the policy too, and is not a failure.
	ids2 := f.add(t, "a", "t2")
	f.lease(t, f.pilot, "a", 1, T0)
	r = f.complete(t, store.Completion{TaskID: ids2[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, policy, T0)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusOK}, r)
	require.Equal(t, policyCall{mod, 0, store.KindApp, 0, 0}, policy.calls[2])
	require.Zero(t, f.get(t, ids2[0]).AppFailures)
}

// delayedPolicy retries app failures up to n times, each after a delay of
// appFailures seconds; infrastructure failures retry at once.
type delayedPolicy struct{ *recordingPolicy }

func (delayedPolicy) RetryDelay(_ int64, appFailures int) time.Duration {
	return time.Duration(appFailures) * time.Second
}

func testCompleteRetryBackoff(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2")
	policy := delayedPolicy{retryUpTo(2)}
	f.lease(t, f.pilot, "a", 2, T0)
	r := f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, policy, T0)
	require.True(t, r.Applied)
	require.Equal(t, store.StatusRetryWait, r.Status)
	requireTime(t, at(time.Second), r.RetryAt, "RetryAt")
	// An infrastructure failure is retried at once, whatever the backoff.
	r = f.complete(t, store.Completion{TaskID: ids[1], Attempt: 1, PilotID: f.pilot, Code: -1, Kind: store.KindInfra}, policy, T0)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusReady}, r)
	task := f.get(t, ids[0])
	require.Equal(t, store.StatusRetryWait, task.Status)
	require.Equal(t, 1, task.AppFailures)

	// Not leasable, not promoted before it is due.
	require.Equal(t, ids[1:], leaseIDs(f.lease(t, f.pilot, "a", 2, T0)))
	mods, err := s.TaskPromoteRetries(t.Context(), at(999*time.Millisecond))
	require.NoError(t, err)
	require.Empty(t, mods)
	require.Empty(t, f.lease(t, f.pilot, "a", 2, at(999*time.Millisecond)))

	// Due: READY again, once.
	mods, err = s.TaskPromoteRetries(t.Context(), at(time.Second))
	require.NoError(t, err)
	require.Equal(t, []int64{f.mod["a"]}, mods)
	mods, err = s.TaskPromoteRetries(t.Context(), at(time.Second))
	require.NoError(t, err)
	require.Empty(t, mods)
	ls := f.lease(t, f.pilot, "a", 2, at(time.Second))
	require.Equal(t, ids[:1], leaseIDs(ls))
	require.Equal(t, 2, ls[0].Attempt)

	// The second retry waits twice as long; the last failure is final.
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 2, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, policy, at(time.Second))
	require.Equal(t, store.StatusRetryWait, r.Status)
	requireTime(t, at(3*time.Second), r.RetryAt, "second RetryAt")
	mods, err = s.TaskPromoteRetries(t.Context(), at(2999*time.Millisecond))
	require.NoError(t, err)
	require.Empty(t, mods)
	mods, err = s.TaskPromoteRetries(t.Context(), at(3*time.Second))
	require.NoError(t, err)
	require.Len(t, mods, 1)
	f.lease(t, f.pilot, "a", 1, at(3*time.Second))
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 3, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, policy, at(3*time.Second))
	require.Equal(t, store.CompleteResult{Applied: true, Status: 1}, r)
}

func testCompleteInfraKind(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	mod := f.mod["a"]
	policy := retryUpTo(1)

	f.lease(t, f.pilot, "a", 1, T0)
	r := f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: store.StatusSysLost, Kind: store.KindInfra,
		Record: store.Attempt{Reason: "walltime", ExitCode: -1}}, policy, T0)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusReady}, r)
	require.Equal(t, []policyCall{{mod, store.StatusSysLost, store.KindInfra, 0, 0}}, policy.calls)
	task := f.get(t, ids[0])
	require.Equal(t, 1, task.InfraFailures)
	require.Zero(t, task.AppFailures)
	as := f.attempts(t, ids[0])
	require.Len(t, as, 1)
	require.Equal(t, store.KindInfra, as[0].Kind)
	require.Equal(t, store.StatusSysLost, as[0].Code)
	require.Equal(t, -1, as[0].ExitCode)
	require.Equal(t, "walltime", as[0].Reason)

	f.lease(t, f.pilot, "a", 1, T0)
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 2, PilotID: f.pilot, Code: 2, Kind: store.KindApp}, policy, T0)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusReady}, r)
	require.Equal(t, policyCall{mod, 2, store.KindApp, 0, 1}, policy.calls[1])

	f.lease(t, f.pilot, "a", 1, T0)
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 3, PilotID: f.pilot, Code: store.StatusSysLost, Kind: store.KindInfra}, policy, T0)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusSysLost}, r)
	require.Equal(t, policyCall{mod, store.StatusSysLost, store.KindInfra, 1, 1}, policy.calls[2])
	task = f.get(t, ids[0])
	require.Equal(t, store.StatusSysLost, task.Status)
	require.Equal(t, 2, task.InfraFailures)
	require.Equal(t, 1, task.AppFailures)
	require.True(t, store.IsFinal(task.Status))
}

func testCompleteFenced(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	other := mustPilot(t, s, "local", "n2", T0)
	policy := retryUpTo(5)
	f.lease(t, f.pilot, "a", 1, T0)
	before := f.get(t, ids[0])
	msgs := []store.TaskInput{{ModuleID: f.mod["b"], Body: "should-not-exist", Status: store.StatusReady}}

	// Wrong attempt.
	r := f.complete(t, store.Completion{TaskID: ids[0], Attempt: 2, PilotID: f.pilot, Code: 0, Kind: store.KindApp, Messages: msgs,
		Record: store.Attempt{Host: "n1", Stdout: "late"}}, policy, at(time.Second))
	require.Equal(t, store.CompleteResult{Applied: false, Status: store.StatusQueued}, r)
	// Wrong pilot.
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: other, Code: 0, Kind: store.KindApp, Messages: msgs}, policy, at(2*time.Second))
	require.Equal(t, store.CompleteResult{Applied: false, Status: store.StatusQueued}, r)
	require.Empty(t, policy.calls, "fenced completions do not consult the policy")

	// Nothing changed.
	after := f.get(t, ids[0])
	require.Equal(t, before, after)
	bTasks, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["b"]})
	require.NoError(t, err)
	require.Empty(t, bTasks)

	// The right one applies.
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, policy, at(3*time.Second))
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusOK}, r)
	// Completing twice: the second is fenced and changes nothing.
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 7, Kind: store.KindApp, Messages: msgs}, policy, at(4*time.Second))
	require.Equal(t, store.CompleteResult{Applied: false, Status: store.StatusOK}, r)
	task := f.get(t, ids[0])
	require.Equal(t, store.StatusOK, task.Status)
	require.Zero(t, task.AppFailures)
	requireTime(t, at(3*time.Second), task.UpdatedAt, "UpdatedAt")

	as := f.attempts(t, ids[0])
	require.Len(t, as, 4)
	kinds := []string{as[0].Kind, as[1].Kind, as[2].Kind, as[3].Kind}
	require.Equal(t, []string{store.KindFenced, store.KindFenced, store.KindApp, store.KindFenced}, kinds)
	// Fenced rows keep what the pilot reported.
	require.Equal(t, 2, as[0].Attempt)
	require.Equal(t, f.pilot, as[0].PilotID)
	require.Equal(t, "n1", as[0].Host)
	require.Equal(t, "late", as[0].Stdout)
	requireTime(t, at(time.Second), as[0].RecordedAt, "RecordedAt")
	require.Equal(t, other, as[1].PilotID)
	require.Equal(t, 7, as[3].Code)
	for _, a := range as {
		require.Equal(t, ids[0], a.TaskID)
		require.Equal(t, f.app.ID, a.AppID)
		require.Equal(t, f.mod["a"], a.ModuleID)
	}
	bTasks, err = s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["b"]})
	require.NoError(t, err)
	require.Empty(t, bTasks)
}

func testCompleteFencedAfterReLease(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	other := mustPilot(t, s, "local", "n2", T0)
	f.lease(t, f.pilot, "a", 1, T0)
	expired, err := s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: at(2 * time.Minute), Reason: "lease expired"})
	require.NoError(t, err)
	require.Equal(t, ids, taskIDs(expired))

	// Expired but not yet re-leased: the old result is stale.
	r := f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, at(3*time.Minute))
	require.Equal(t, store.CompleteResult{Applied: false, Status: store.StatusReady}, r)

	ls := f.lease(t, other, "a", 1, at(4*time.Minute))
	require.Equal(t, 2, ls[0].Attempt)
	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, at(5*time.Minute))
	require.Equal(t, store.CompleteResult{Applied: false, Status: store.StatusQueued}, r)
	task := f.get(t, ids[0])
	require.Equal(t, other, task.PilotID)
	require.Equal(t, 2, task.Attempt)

	r = f.complete(t, store.Completion{TaskID: ids[0], Attempt: 2, PilotID: other, Code: 0, Kind: store.KindApp}, nil, at(5*time.Minute))
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusOK}, r)

	as := f.attempts(t, ids[0])
	require.Len(t, as, 4)
	require.Equal(t, store.KindInfra, as[0].Kind)
	require.Equal(t, store.KindFenced, as[1].Kind)
	require.Equal(t, store.KindFenced, as[2].Kind)
	require.Equal(t, store.KindApp, as[3].Kind)
	require.Equal(t, other, as[3].PilotID)
	requireTime(t, at(4*time.Minute), as[3].LeasedAt, "LeasedAt")
}

func testCompleteSameTaskTwice(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2")
	f.lease(t, f.pilot, "a", 2, T0)
	res, err := s.TaskComplete(f.ctx, store.TaskCompleteParams{
		Completions: []store.Completion{
			{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp,
				Messages: []store.TaskInput{{ModuleID: f.mod["b"], Body: "first", Status: store.StatusReady}}},
			{TaskID: ids[1], Attempt: 1, PilotID: f.pilot, Code: 4, Kind: store.KindApp},
			{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 9, Kind: store.KindApp,
				Messages: []store.TaskInput{{ModuleID: f.mod["b"], Body: "second", Status: store.StatusReady}}},
		},
		Now: T0,
	})
	require.NoError(t, err)
	require.Equal(t, []store.CompleteResult{
		{Applied: true, Status: store.StatusOK, Emitted: 1},
		{Applied: true, Status: 4},
		{Applied: false, Status: store.StatusOK},
	}, res)
	bTasks, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["b"]})
	require.NoError(t, err)
	require.Len(t, bTasks, 1)
	require.Equal(t, "first", bTasks[0].Body)
	as := f.attempts(t, ids[0])
	require.Len(t, as, 2)
	require.Equal(t, store.KindApp, as[0].Kind)
	require.Equal(t, store.KindFenced, as[1].Kind)
	require.Equal(t, 9, as[1].Code)
}

func testCompleteUnknownTask(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	f.lease(t, f.pilot, "a", 1, T0)
	res, err := s.TaskComplete(f.ctx, store.TaskCompleteParams{
		Completions: []store.Completion{
			{TaskID: 9999999, Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp,
				Messages: []store.TaskInput{{ModuleID: f.mod["b"], Body: "x", Status: store.StatusReady}}},
			{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp},
		},
		Now: T0,
	})
	require.NoError(t, err)
	require.Len(t, res, 2)
	require.False(t, res[0].Applied)
	require.Zero(t, res[0].Emitted)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusOK}, res[1])
	none, err := s.AttemptList(f.ctx, 9999999)
	require.NoError(t, err)
	require.Empty(t, none)

	// No completions at all.
	res, err = s.TaskComplete(f.ctx, store.TaskCompleteParams{Now: T0})
	require.NoError(t, err)
	require.Empty(t, res)
}

func testCompleteMessages(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	existing := f.add(t, "b", "dup")
	f.lease(t, f.pilot, "a", 1, T0)
	now := at(time.Minute)
	r := f.complete(t, store.Completion{
		TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp,
		Messages: []store.TaskInput{
			{ModuleID: f.mod["b"], Body: "m1", Headers: `{"from_module":"a","_vtask_id":"1"}`, Status: store.StatusReady},
			{ModuleID: f.mod["b"], Body: "dup", Headers: `{"new":"1"}`, Status: store.StatusReady},
			{ModuleID: f.mod["c"], Body: "m2", Status: store.StatusInitial, ToHost: "n7"},
			{ModuleID: f.mod["b"], Body: "m1", Status: store.StatusReady},
		},
	}, nil, now)
	require.Equal(t, store.CompleteResult{Applied: true, Status: store.StatusOK, Emitted: 2, Duplicates: 2}, r)

	bTasks, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["b"]})
	require.NoError(t, err)
	require.Len(t, bTasks, 2)
	require.Equal(t, existing[0], bTasks[0].ID)
	require.Equal(t, "{}", bTasks[0].Headers, "IGNORE keeps the existing task")
	m1 := bTasks[1]
	require.Equal(t, "m1", m1.Body)
	require.Equal(t, f.app.ID, m1.AppID)
	require.Equal(t, store.StatusReady, m1.Status)
	require.JSONEq(t, `{"from_module":"a","_vtask_id":"1"}`, m1.Headers)
	requireTime(t, now, m1.CreatedAt, "CreatedAt")
	require.Greater(t, m1.ID, ids[0])

	cTasks, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["c"]})
	require.NoError(t, err)
	require.Len(t, cTasks, 1)
	require.Equal(t, store.StatusInitial, cTasks[0].Status)
	require.Equal(t, "n7", cTasks[0].ToHost)
	require.Equal(t, "{}", cTasks[0].Headers)

	// Messages get the app of the completing task.
	other := mustApp(t, s, "other", "x", "y")
	res, err := s.TaskAdd(f.ctx, store.TaskAddParams{AppID: other.ID, Now: T0, Tasks: []store.TaskInput{
		{ModuleID: other.Modules[0].ID, Body: "o1", Status: store.StatusReady},
	}})
	require.NoError(t, err)
	ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{PilotID: f.pilot, TTL: time.Minute, Now: T0,
		Modules: []store.ModuleLease{{ModuleID: other.Modules[0].ID, Max: 1}}})
	require.NoError(t, err)
	require.Equal(t, res.IDs, leaseIDs(ls))
	r = f.complete(t, store.Completion{TaskID: res.IDs[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp,
		Messages: []store.TaskInput{{ModuleID: other.Modules[1].ID, Body: "o2", Status: store.StatusReady}}}, nil, now)
	require.Equal(t, 1, r.Emitted)
	yTasks, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: other.Modules[1].ID})
	require.NoError(t, err)
	require.Len(t, yTasks, 1)
	require.Equal(t, other.ID, yTasks[0].AppID)

	// Emitting from a failed attempt works the same (the broker decides).
	ids2 := f.add(t, "a", "t2")
	f.lease(t, f.pilot, "a", 1, now)
	r = f.complete(t, store.Completion{TaskID: ids2[0], Attempt: 1, PilotID: f.pilot, Code: 3, Kind: store.KindApp,
		Messages: []store.TaskInput{{ModuleID: f.mod["b"], Body: "from-failure", Status: store.StatusReady}}}, nil, now)
	require.Equal(t, store.CompleteResult{Applied: true, Status: 3, Emitted: 1}, r)
}

func testCompleteMessagesAcrossCompletions(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2", "t3")
	f.lease(t, f.pilot, "a", 3, T0)
	msg := func(body string) []store.TaskInput {
		return []store.TaskInput{{ModuleID: f.mod["b"], Body: body, Status: store.StatusReady}}
	}
	res, err := s.TaskComplete(f.ctx, store.TaskCompleteParams{
		Completions: []store.Completion{
			{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp, Messages: msg("shared")},
			{TaskID: ids[1], Attempt: 5, PilotID: f.pilot, Code: 0, Kind: store.KindApp, Messages: msg("fenced-msg")},
			{TaskID: ids[2], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp, Messages: append(msg("shared"), msg("own")...)},
		},
		Now: T0,
	})
	require.NoError(t, err)
	require.Equal(t, []store.CompleteResult{
		{Applied: true, Status: store.StatusOK, Emitted: 1},
		{Applied: false, Status: store.StatusQueued},
		{Applied: true, Status: store.StatusOK, Emitted: 1, Duplicates: 1},
	}, res)
	bTasks, err := s.TaskList(f.ctx, store.TaskFilter{ModuleID: f.mod["b"]})
	require.NoError(t, err)
	require.Len(t, bTasks, 2)
	require.Equal(t, "shared", bTasks[0].Body)
	require.Equal(t, "own", bTasks[1].Body)
}

func testCompleteMessagesOverwrite(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2")
	downstream := f.add(t, "b", "done-before", "pending")
	// Finish "done-before".
	ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{PilotID: f.pilot, TTL: time.Minute, Now: T0,
		Modules: []store.ModuleLease{{ModuleID: f.mod["b"], Max: 1}}})
	require.NoError(t, err)
	require.Equal(t, downstream[:1], leaseIDs(ls))
	f.complete(t, store.Completion{TaskID: downstream[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, T0)

	f.lease(t, f.pilot, "a", 2, T0)
	res, err := s.TaskComplete(f.ctx, store.TaskCompleteParams{
		Completions: []store.Completion{{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp,
			Messages: []store.TaskInput{
				{ModuleID: f.mod["b"], Body: "done-before", Headers: `{"v":"2"}`, Status: store.StatusReady},
				{ModuleID: f.mod["b"], Body: "pending", Headers: `{"v":"3"}`, Status: store.StatusReady},
			}}},
		Conflict: store.ConflictOverwrite,
		Now:      T0,
	})
	require.NoError(t, err)
	require.Equal(t, []store.CompleteResult{{Applied: true, Status: store.StatusOK, Emitted: 1, Duplicates: 1}}, res)
	again := f.get(t, downstream[0])
	require.Equal(t, store.StatusReady, again.Status)
	require.JSONEq(t, `{"v":"2"}`, again.Headers)
	require.Equal(t, 1, again.Attempt)
	pending := f.get(t, downstream[1])
	require.Equal(t, store.StatusReady, pending.Status)
	require.JSONEq(t, `{"v":"3"}`, pending.Headers)
	// ids[1] untouched.
	require.Equal(t, store.StatusQueued, f.get(t, ids[1]).Status)
}

// testCompleteBatch completes many attempts in one call.
func testCompleteBatch(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	const n = 1200
	ids := f.add(t, "a", bodies("t", n)...)
	ls := f.lease(t, f.pilot, "a", n, T0)
	require.Len(t, ls, n)
	cs := make([]store.Completion, n)
	for i, l := range ls {
		cs[i] = store.Completion{TaskID: l.TaskID, Attempt: l.Attempt, PilotID: f.pilot, Code: i % 3, Kind: store.KindApp,
			Record:   store.Attempt{Stdout: l.Body, Extra: map[string]any{"i": float64(i)}},
			Messages: []store.TaskInput{{ModuleID: f.mod["b"], Body: l.Body, Status: store.StatusReady}}}
	}
	res, err := s.TaskComplete(f.ctx, store.TaskCompleteParams{Completions: cs, Now: at(time.Second)})
	require.NoError(t, err)
	require.Len(t, res, n)
	for i, r := range res {
		require.Equal(t, store.CompleteResult{Applied: true, Status: i % 3, Emitted: 1}, r)
	}
	counts, err := s.AppTaskCounts(f.ctx, f.app.ID)
	require.NoError(t, err)
	sortStatusCounts(counts)
	want := []store.StatusCount{
		{ModuleID: f.mod["a"], Status: 0, Count: n / 3},
		{ModuleID: f.mod["a"], Status: 1, Count: n / 3},
		{ModuleID: f.mod["a"], Status: 2, Count: n / 3},
		{ModuleID: f.mod["b"], Status: store.StatusReady, Count: n},
	}
	sortStatusCounts(want)
	require.Equal(t, want, counts)
	as := f.attempts(t, ids[n-1])
	require.Len(t, as, 1)
	require.Equal(t, "t-001199", as[0].Stdout)
	require.Equal(t, map[string]any{"i": float64(n - 1)}, as[0].Extra)
}

func testReleaseListed(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2", "t3")
	other := mustPilot(t, s, "local", "n2", T0)
	f.lease(t, f.pilot, "a", 2, T0)
	f.lease(t, other, "a", 1, T0)
	_, err := s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{PilotID: f.pilot, TTL: time.Minute, Now: T0,
		Running: []store.TaskAttempt{{TaskID: ids[1], Attempt: 1}}})
	require.NoError(t, err)

	now := at(time.Second)
	n, err := s.TaskRelease(f.ctx, store.TaskReleaseParams{
		PilotID: f.pilot,
		Attempts: []store.TaskAttempt{
			{TaskID: ids[0], Attempt: 2},  // wrong attempt
			{TaskID: ids[1], Attempt: 1},  // RUNNING, current
			{TaskID: ids[2], Attempt: 1},  // another pilot's
			{TaskID: 9999999, Attempt: 1}, // unknown
		},
		Reason: "draining",
		Now:    now,
	})
	require.NoError(t, err)
	require.Equal(t, 1, n)

	released := f.get(t, ids[1])
	require.Equal(t, store.StatusReady, released.Status)
	require.Zero(t, released.PilotID)
	require.Equal(t, 1, released.Attempt)
	require.Zero(t, released.AppFailures)
	require.Zero(t, released.InfraFailures)
	requireTime(t, time.Time{}, released.LeaseExpires, "LeaseExpires")
	requireTime(t, now, released.UpdatedAt, "UpdatedAt")
	as := f.attempts(t, ids[1])
	require.Len(t, as, 1)
	a := as[0]
	require.Equal(t, store.KindReleased, a.Kind)
	require.Equal(t, "draining", a.Reason)
	require.Equal(t, 1, a.Attempt)
	require.Equal(t, f.pilot, a.PilotID)
	require.Equal(t, f.app.ID, a.AppID)
	require.Equal(t, f.mod["a"], a.ModuleID)
	requireTime(t, T0, a.CreatedAt, "CreatedAt")
	requireTime(t, T0, a.LeasedAt, "LeasedAt")
	requireTime(t, now, a.RecordedAt, "RecordedAt")

	require.Equal(t, store.StatusQueued, f.get(t, ids[0]).Status)
	require.Empty(t, f.attempts(t, ids[0]))
	require.Equal(t, other, f.get(t, ids[2]).PilotID)

	// Releasing again is a no-op.
	n, err = s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, Now: now,
		Attempts: []store.TaskAttempt{{TaskID: ids[1], Attempt: 1}}})
	require.NoError(t, err)
	require.Zero(t, n)
	// Re-leased with the next attempt.
	ls := f.lease(t, other, "a", 1, now)
	require.Equal(t, []int64{ids[1]}, leaseIDs(ls))
	require.Equal(t, 2, ls[0].Attempt)
}

func testReleaseAll(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1", "t2", "t3", "t4")
	other := mustPilot(t, s, "local", "n2", T0)
	f.lease(t, f.pilot, "a", 3, T0)
	f.lease(t, other, "a", 1, T0)
	f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 0, Kind: store.KindApp}, nil, T0)

	n, err := s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, All: true, Reason: "deregister", Now: T0})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, store.StatusOK, f.get(t, ids[0]).Status)
	require.Equal(t, store.StatusReady, f.get(t, ids[1]).Status)
	require.Equal(t, store.StatusReady, f.get(t, ids[2]).Status)
	require.Equal(t, store.StatusQueued, f.get(t, ids[3]).Status)
	for _, id := range ids[1:3] {
		as := f.attempts(t, id)
		require.Len(t, as, 1)
		require.Equal(t, store.KindReleased, as[0].Kind)
		require.Equal(t, "deregister", as[0].Reason)
	}

	n, err = s.TaskRelease(f.ctx, store.TaskReleaseParams{PilotID: f.pilot, All: true, Now: T0})
	require.NoError(t, err)
	require.Zero(t, n)
}

func testExpire(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "short", "long", "running")
	other := mustPilot(t, s, "local", "n2", T0)
	leaseOne := func(pilot int64, ttl time.Duration) []int64 {
		t.Helper()
		ls, err := s.TaskLease(f.ctx, store.TaskLeaseParams{PilotID: pilot, TTL: ttl, Now: T0,
			Modules: []store.ModuleLease{{ModuleID: f.mod["a"], Max: 1}}})
		require.NoError(t, err)
		return leaseIDs(ls)
	}
	require.Equal(t, ids[:1], leaseOne(f.pilot, time.Minute))
	require.Equal(t, ids[1:2], leaseOne(other, 10*time.Minute))
	require.Equal(t, ids[2:3], leaseOne(f.pilot, time.Minute))
	_, err := s.TaskHeartbeat(f.ctx, store.TaskHeartbeatParams{PilotID: f.pilot, TTL: time.Minute, Now: T0,
		Running: []store.TaskAttempt{{TaskID: ids[2], Attempt: 1}}})
	require.NoError(t, err)

	// A lease expiring exactly at Now has not expired before Now.
	expired, err := s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: T0.Add(time.Minute)})
	require.NoError(t, err)
	require.Empty(t, expired)

	now := at(2 * time.Minute)
	expired, err = s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: now, Reason: "lease expired"})
	require.NoError(t, err)
	require.ElementsMatch(t, []int64{ids[0], ids[2]}, taskIDs(expired))
	for _, task := range expired {
		require.Equal(t, store.StatusReady, task.Status, "nil policy retries")
		require.Equal(t, 1, task.InfraFailures)
		require.Zero(t, task.PilotID)
		require.Equal(t, 1, task.Attempt)
		requireTime(t, time.Time{}, task.LeaseExpires, "LeaseExpires")
		requireTime(t, now, task.UpdatedAt, "UpdatedAt")
		require.Equal(t, task, f.get(t, task.ID))
	}
	as := f.attempts(t, ids[0])
	require.Len(t, as, 1)
	a := as[0]
	require.Equal(t, store.KindInfra, a.Kind)
	require.Equal(t, "lease expired", a.Reason)
	require.Equal(t, 1, a.Attempt)
	require.Equal(t, f.pilot, a.PilotID)
	require.Equal(t, store.StatusSysLost, a.Code)
	requireTime(t, T0, a.LeasedAt, "LeasedAt")
	requireTime(t, now, a.RecordedAt, "RecordedAt")
	require.Equal(t, f.pilot, f.attempts(t, ids[2])[0].PilotID)

	long := f.get(t, ids[1])
	require.Equal(t, store.StatusQueued, long.Status)
	require.Empty(t, f.attempts(t, ids[1]))

	// Nothing left to expire.
	expired, err = s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: now})
	require.NoError(t, err)
	require.Empty(t, expired)
}

func testExpirePolicy(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	ids := f.add(t, "a", "t1")
	mod := f.mod["a"]
	policy := &recordingPolicy{next: func(c policyCall) int {
		if c.InfraFailures >= 1 {
			return c.Code
		}
		return store.StatusReady
	}}
	// An earlier app failure shows up in the counters.
	f.lease(t, f.pilot, "a", 1, T0)
	f.complete(t, store.Completion{TaskID: ids[0], Attempt: 1, PilotID: f.pilot, Code: 1, Kind: store.KindApp}, retryUpTo(3), T0)

	f.lease(t, f.pilot, "a", 1, T0)
	expired, err := s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: at(time.Hour), Policy: policy})
	require.NoError(t, err)
	require.Len(t, expired, 1)
	require.Equal(t, store.StatusReady, expired[0].Status)
	require.Equal(t, []policyCall{{mod, store.StatusSysLost, store.KindInfra, 1, 0}}, policy.calls)

	f.lease(t, f.pilot, "a", 1, at(time.Hour))
	expired, err = s.TaskExpireLeases(f.ctx, store.TaskExpireParams{Now: at(2 * time.Hour), Policy: policy})
	require.NoError(t, err)
	require.Len(t, expired, 1)
	require.Equal(t, store.StatusSysLost, expired[0].Status)
	require.Equal(t, 2, expired[0].InfraFailures)
	require.Equal(t, 1, expired[0].AppFailures)
	require.Equal(t, policyCall{mod, store.StatusSysLost, store.KindInfra, 1, 1}, policy.calls[1])
	require.Equal(t, store.StatusSysLost, f.get(t, ids[0]).Status)
	require.Empty(t, f.lease(t, f.pilot, "a", 1, at(3*time.Hour)))
	as := f.attempts(t, ids[0])
	require.Len(t, as, 3)
	require.Equal(t, []int{1, 2, 3}, []int{as[0].Attempt, as[1].Attempt, as[2].Attempt})
}
