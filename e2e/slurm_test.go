package e2e_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/slurm"
)

// TestAppPrimesThroughSlurm: an array of two pilot jobs on a real Slurm
// cluster runs app-primes to the end; the pilots report their array task
// ids, and the jobs end COMPLETED once the pilots have been idle.
func TestAppPrimesThroughSlurm(t *testing.T) {
	t.Parallel()
	clientEnv := slurmCluster(t)
	t0 := time.Now()
	e := newBroker(t, broker.Config{LeaseTTL: 5 * time.Second})
	s := slurm.New(batch.Exec{Env: clientEnv})
	a := e.createPrimes(t, "slurm")

	spec := e.pilotSpec(t, "sbx-primes", a.ID, "my-module:2,mr-module:1", nil, nil)
	spec.ArraySize = 2
	spec.Output = filepath.Join(e.dir, "job-%A_%a.out")
	checkJobLogs(t, filepath.Join(e.dir, "job-*.out"))
	id, err := s.Submit(e.ctx, spec)
	require.NoError(t, err)
	t.Logf("submitted array %s after %v", id, time.Since(t0))
	t.Cleanup(func() { _ = s.Cancel(context.Background(), id) })

	e.appDone(t, a.ID, primesDone, 60*time.Second)
	t.Logf("app done after %v", time.Since(t0))
	require.EqualValues(t, 168, e.semaphore(t, a.ID))

	want := []string{string(id) + "_0", string(id) + "_1"}
	require.Eventually(t, func() bool { return len(e.pilotJobIDs(t)) == 2 }, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, want, e.pilotJobIDs(t), "pilots report their array task ids")

	ids := []batch.JobID{id, id + "_0", id + "_1"}
	res := waitFinal(t, s, ids, 40*time.Second)
	for _, j := range ids {
		require.Equal(t, batch.Completed, res[j].State, "%s: %+v", j, res[j])
	}
	ps, err := e.client.PilotList(e.ctx)
	require.NoError(t, err)
	for _, p := range ps {
		require.Equal(t, "GONE", p.Status, "pilot %d (%s) deregistered", p.ID, p.JobID)
	}
	t.Logf("jobs completed after %v", time.Since(t0))
}

// TestSlurmPilotCancelledMidTask: scancel of a pilot job while a calc task
// runs hands the task back as an infra attempt, without spending the
// module's retry budget; a second pilot job finishes the app exactly.
func TestSlurmPilotCancelledMidTask(t *testing.T) {
	t.Parallel()
	clientEnv := slurmCluster(t)
	t0 := time.Now()
	e := newBroker(t, broker.Config{LeaseTTL: 2 * time.Second})
	s := slurm.New(batch.Exec{Env: clientEnv})
	a := e.createSlowPrimes(t, "slurm-cancel")
	checkJobLogs(t, filepath.Join(e.dir, "job-*.out"))

	// The first pilot's calc tasks would take a minute.
	first := e.pilotSpec(t, "sbx-cancelled", a.ID, "my-module:1,mr-module:1",
		[]string{"--grace", "2s"}, map[string]string{"CALC_SLEEP": "60"})
	first.Output = filepath.Join(e.dir, "job-%j.out")
	id1, err := s.Submit(e.ctx, first)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Cancel(context.Background(), id1) })

	victim := e.runningCalc(t, a.ID, 30*time.Second)
	t.Logf("task %d (%s) running on pilot %d after %v: scancel %s", victim.ID, victim.Body, victim.PilotID, time.Since(t0), id1)
	require.NoError(t, s.Cancel(e.ctx, id1))

	second := e.pilotSpec(t, "sbx-second", a.ID, "my-module:2,mr-module:1", nil, map[string]string{"CALC_SLEEP": "0.2"})
	second.Output = filepath.Join(e.dir, "job-%j.out")
	id2, err := s.Submit(e.ctx, second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Cancel(context.Background(), id2) })

	e.appDone(t, a.ID, primesDone, 60*time.Second)
	t.Logf("app done after %v", time.Since(t0))
	require.EqualValues(t, 168, e.semaphore(t, a.ID))
	e.checkInterrupted(t, a.ID, victim.ID)

	res := waitFinal(t, s, []batch.JobID{id1, id2}, 40*time.Second)
	require.Equal(t, batch.Cancelled, res[id1].State, "%+v", res[id1])
	require.Equal(t, batch.Completed, res[id2].State, "%+v", res[id2])
	t.Logf("jobs final after %v", time.Since(t0))
}

// TestSlurmPilotRunsIntoItsWalltime: a pilot job with a one-minute Slurm
// time limit (--time=1) and calc tasks of five minutes. The pilot reads its
// job's end from squeue, leases a first calc task (no runtime declared),
// and stops it --grace before the limit: the task goes back as infra,
// never charged to retry_rules, the pilot leaves in time (the job ends
// COMPLETED, not TIMEOUT), and a second pilot job finishes the app with
// the right total.
func TestSlurmPilotRunsIntoItsWalltime(t *testing.T) {
	t.Parallel()
	clientEnv := slurmCluster(t)
	t0 := time.Now()
	e := newBroker(t, broker.Config{LeaseTTL: 3 * time.Second})
	s := slurm.New(batch.Exec{Env: clientEnv})
	a := e.createSlowPrimes(t, "slurm-walltime")
	checkJobLogs(t, filepath.Join(e.dir, "job-*.out"))

	short := e.pilotSpec(t, "sbx-walltime", a.ID, "my-module:1,mr-module:1",
		[]string{"--grace", "5s"}, map[string]string{"CALC_SLEEP": "300"})
	short.Walltime = time.Minute
	short.Output = filepath.Join(e.dir, "job-%j.out")
	id1, err := s.Submit(e.ctx, short)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Cancel(context.Background(), id1) })

	victim := e.runningCalc(t, a.ID, 30*time.Second)
	t.Logf("task %d (%s) running on pilot %d after %v", victim.ID, victim.Body, victim.PilotID, time.Since(t0))
	ps, err := e.client.PilotList(e.ctx)
	require.NoError(t, err)
	require.Len(t, ps, 1)
	require.NotNil(t, ps[0].Deadline, "the pilot knows its walltime end")
	require.WithinDuration(t, ps[0].RegisteredAt.Add(time.Minute), *ps[0].Deadline, 15*time.Second)

	res := waitFinal(t, s, []batch.JobID{id1}, 120*time.Second)
	t.Logf("job %s: %+v after %v", id1, res[id1], time.Since(t0))
	require.Equal(t, batch.Completed, res[id1].State, "the pilot left before its time limit: %+v", res[id1])
	e.requireInfraFirst(t, victim.ID)

	second := e.pilotSpec(t, "sbx-after", a.ID, "my-module:2,mr-module:1", nil, map[string]string{"CALC_SLEEP": "0.2"})
	second.Output = filepath.Join(e.dir, "job-%j.out")
	id2, err := s.Submit(e.ctx, second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Cancel(context.Background(), id2) })
	e.appDone(t, a.ID, primesDone, 90*time.Second)
	require.EqualValues(t, 168, e.semaphore(t, a.ID))
	e.checkInterrupted(t, a.ID, victim.ID)
	t.Logf("app done after %v", time.Since(t0))
}
