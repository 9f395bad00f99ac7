package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/store"
)

var pilotJobTests = []namedTest{
	{"AddGetList", testPilotJobAddGetList},
	{"Update", testPilotJobUpdate},
}

func testPilotJobAddGetList(t *testing.T, s store.Store) {
	ctx := context.Background()
	j1, err := s.PilotJobAdd(ctx, &store.PilotJob{Site: "hpc1", AppID: 7, JobID: "123", Count: 4, State: "PENDING",
		Native: "PENDING", Reason: "Priority", SubmittedAt: T0})
	require.NoError(t, err)
	require.NotZero(t, j1.ID)
	require.Nil(t, j1.ExitCode)
	require.False(t, j1.Final)
	requireTime(t, T0, j1.SubmittedAt, "SubmittedAt")
	requireTime(t, T0, j1.UpdatedAt, "UpdatedAt")

	code := 1
	j2, err := s.PilotJobAdd(ctx, &store.PilotJob{Site: "hpc1", AppID: 8, Count: 2, State: store.PilotJobRefused,
		Reason: "sbatch: error: invalid partition specified: nope", ExitCode: &code, Final: true, SubmittedAt: at(time.Second)})
	require.NoError(t, err)
	j3, err := s.PilotJobAdd(ctx, &store.PilotJob{Site: "pbs1", AppID: 7, JobID: "9.server", Count: 1, State: "RUNNING"})
	require.NoError(t, err)
	require.False(t, j3.SubmittedAt.IsZero(), "a zero SubmittedAt is now")

	got, err := s.PilotJobGet(ctx, j2.ID)
	require.NoError(t, err)
	require.Equal(t, "hpc1", got.Site)
	require.EqualValues(t, 8, got.AppID)
	require.Equal(t, "", got.JobID)
	require.Equal(t, 2, got.Count)
	require.Equal(t, store.PilotJobRefused, got.State)
	require.Equal(t, "sbatch: error: invalid partition specified: nope", got.Reason)
	require.NotNil(t, got.ExitCode)
	require.Equal(t, 1, *got.ExitCode)
	require.True(t, got.Final)

	_, err = s.PilotJobGet(ctx, 424242)
	require.True(t, errors.Is(err, store.ErrNotFound), "%v", err)

	ids := func(f store.PilotJobFilter) []int64 {
		js, err := s.PilotJobList(ctx, f)
		require.NoError(t, err)
		var out []int64
		for _, j := range js {
			out = append(out, j.ID)
		}
		return out
	}
	require.Equal(t, []int64{j3.ID, j2.ID, j1.ID}, ids(store.PilotJobFilter{}), "newest first")
	require.Equal(t, []int64{j2.ID, j1.ID}, ids(store.PilotJobFilter{Site: "hpc1"}))
	require.Equal(t, []int64{j3.ID, j1.ID}, ids(store.PilotJobFilter{AppID: 7}))
	require.Equal(t, []int64{j3.ID, j1.ID}, ids(store.PilotJobFilter{Active: true}))
	require.Equal(t, []int64{j1.ID}, ids(store.PilotJobFilter{Site: "hpc1", Active: true}))
	require.Equal(t, []int64{j3.ID}, ids(store.PilotJobFilter{Limit: 1}))
	require.Empty(t, ids(store.PilotJobFilter{Site: "none"}))
}

func testPilotJobUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	a, err := s.PilotJobAdd(ctx, &store.PilotJob{Site: "hpc1", AppID: 1, JobID: "1", Count: 1, State: "PENDING", SubmittedAt: T0})
	require.NoError(t, err)
	b, err := s.PilotJobAdd(ctx, &store.PilotJob{Site: "hpc1", AppID: 1, JobID: "2", Count: 3, State: "PENDING", SubmittedAt: T0})
	require.NoError(t, err)

	code := 127
	require.NoError(t, s.PilotJobUpdate(ctx, []store.PilotJobUpdate{
		{ID: a.ID, State: "FAILED", Native: "FAILED", Reason: "scalebox: command not found", ExitCode: &code, Final: true, At: at(time.Minute)},
		{ID: b.ID, State: "RUNNING", Native: "RUNNING*2,PENDING*1", At: at(time.Minute)},
	}))
	got, err := s.PilotJobGet(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, "FAILED", got.State)
	require.Equal(t, "scalebox: command not found", got.Reason)
	require.Equal(t, 127, *got.ExitCode)
	require.True(t, got.Final)
	requireTime(t, at(time.Minute), got.UpdatedAt, "UpdatedAt")
	requireTime(t, T0, got.SubmittedAt, "SubmittedAt is kept")
	got, err = s.PilotJobGet(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, "RUNNING*2,PENDING*1", got.Native)
	require.Nil(t, got.ExitCode)
	require.False(t, got.Final)

	// An unknown id: an error, and nothing of the batch is stored.
	err = s.PilotJobUpdate(ctx, []store.PilotJobUpdate{{ID: b.ID, State: "COMPLETED", Final: true}, {ID: 999999, State: "FAILED"}})
	require.True(t, errors.Is(err, store.ErrNotFound), "%v", err)
	got, err = s.PilotJobGet(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, "RUNNING", got.State, "the batch is one transaction")
	require.NoError(t, s.PilotJobUpdate(ctx, nil))
}
