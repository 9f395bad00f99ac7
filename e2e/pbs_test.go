package e2e_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/pbs"
	"github.com/scalebox-hpc/scalebox/pbs/pbstest"
)

// pbsJobEnv puts the double's qstat on the pilots' PATH (a pilot reads its
// walltime end with qstat).
func pbsJobEnv(e *env, srv *pbstest.Server, extra map[string]string) map[string]string {
	m := map[string]string{"PATH": srv.Bin + ":" + filepath.Dir(scaleboxBinary(e.t)) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// TestAppPrimesThroughPBSDouble: the same as TestAppPrimesThroughSlurm
// through the OpenPBS double (an array of two pilot jobs); then a pilot
// job whose PBS walltime (a few seconds) ends mid-task: the task goes back
// as infra, never charged to retry_rules, and a second job finishes the
// app with the right total.
func TestAppPrimesThroughPBSDouble(t *testing.T) {
	t.Parallel()
	scaleboxBinary(t)

	t.Run("array", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		e := newBroker(t, broker.Config{LeaseTTL: 5 * time.Second})
		srv := pbstest.New(t, "PBS_DOUBLE_KILL_DELAY=2", "HOME="+e.dir)
		s := pbs.New(srv.Exec(), pbs.WithHistory(true), pbs.WithScriptDir(e.dir))
		a := e.createPrimes(t, "pbs")
		spec := e.pilotSpec(t, "sbx-primes", a.ID, "my-module:2,mr-module:1", nil, pbsJobEnv(e, srv, nil))
		spec.ArraySize = 2
		checkJobLogs(t, filepath.Join(e.dir, "sbx-primes.*"))
		id, err := s.Submit(e.ctx, spec)
		require.NoError(t, err)
		t.Logf("submitted array %s", id)
		t.Cleanup(func() { _ = s.Cancel(context.Background(), id) })

		e.appDone(t, a.ID, primesDone, 60*time.Second)
		t.Logf("app done after %v", time.Since(t0))
		require.EqualValues(t, 168, e.semaphore(t, a.ID))

		require.Eventually(t, func() bool { return len(e.pilotJobIDs(t)) == 2 }, 30*time.Second, 50*time.Millisecond)
		seq, server, ok := strings.Cut(string(id), "[]")
		require.True(t, ok, "array id %s", id)
		sub := []batch.JobID{batch.JobID(seq + "[0]" + server), batch.JobID(seq + "[1]" + server)}
		require.Equal(t, []string{string(sub[0]), string(sub[1])}, e.pilotJobIDs(t), "pilots report their subjob ids")

		ids := append([]batch.JobID{id}, sub...)
		res := waitFinal(t, s, ids, 40*time.Second)
		for _, j := range ids {
			require.Equal(t, batch.Completed, res[j].State, "%s: %+v", j, res[j])
		}
		t.Logf("jobs completed after %v", time.Since(t0))
	})

	t.Run("qdel", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		e := newBroker(t, broker.Config{LeaseTTL: 2 * time.Second})
		srv := pbstest.New(t, "PBS_DOUBLE_KILL_DELAY=2", "HOME="+e.dir)
		s := pbs.New(srv.Exec(), pbs.WithHistory(true), pbs.WithScriptDir(e.dir))
		a := e.createSlowPrimes(t, "pbs-qdel")
		checkJobLogs(t, filepath.Join(e.dir, "sbx-*"))

		// qdel of a pilot while its calc task (a minute long) runs: the
		// task goes back as infra, never charged to retry_rules.
		first := e.pilotSpec(t, "sbx-deleted", a.ID, "my-module:1,mr-module:1", []string{"--grace", "1s"},
			pbsJobEnv(e, srv, map[string]string{"CALC_SLEEP": "60"}))
		id1, err := s.Submit(e.ctx, first)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Cancel(context.Background(), id1) })
		victim := e.runningCalc(t, a.ID, 30*time.Second)
		t.Logf("task %d (%s) running on pilot %d after %v: qdel %s", victim.ID, victim.Body, victim.PilotID, time.Since(t0), id1)
		require.NoError(t, s.Cancel(e.ctx, id1))

		second := e.pilotSpec(t, "sbx-second", a.ID, "my-module:2,mr-module:1", nil,
			pbsJobEnv(e, srv, map[string]string{"CALC_SLEEP": "0.2"}))
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
	})

	t.Run("walltime", func(t *testing.T) {
		t.Parallel()
		t0 := time.Now()
		e := newBroker(t, broker.Config{LeaseTTL: 2 * time.Second})
		srv := pbstest.New(t, "PBS_DOUBLE_KILL_DELAY=2", "HOME="+e.dir)
		s := pbs.New(srv.Exec(), pbs.WithHistory(true), pbs.WithScriptDir(e.dir))
		a := e.createSlowPrimes(t, "pbs-walltime")
		checkJobLogs(t, filepath.Join(e.dir, "sbx-*"))

		// A walltime of 6 s and calc tasks of a minute: the first calc
		// task is cut by the walltime. The pilot reads its walltime end
		// with qstat and drains itself --grace before it: the job ends
		// COMPLETED.
		short := e.pilotSpec(t, "sbx-short", a.ID, "my-module:1,mr-module:1", []string{"--grace", "1s"},
			pbsJobEnv(e, srv, map[string]string{"CALC_SLEEP": "60"}))
		short.Walltime = 6 * time.Second
		id1, err := s.Submit(e.ctx, short)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Cancel(context.Background(), id1) })
		victim1 := e.runningCalc(t, a.ID, 30*time.Second)
		t.Logf("task %d (%s) running on pilot %d after %v", victim1.ID, victim1.Body, victim1.PilotID, time.Since(t0))
		res := waitFinal(t, s, []batch.JobID{id1}, 30*time.Second)
		t.Logf("job %s: %+v after %v", id1, res[id1], time.Since(t0))
		require.Equal(t, batch.Completed, res[id1].State, "the pilot drained before its walltime: %+v", res[id1])
		e.requireInfraFirst(t, victim1.ID)

		// The same without qstat on the pilot's PATH: the pilot does not
		// know its walltime, and the double SIGTERMs it at the end: the
		// pilot drains, its task is stopped after --grace, and the job
		// ends TIMEOUT.
		blind := e.pilotSpec(t, "sbx-blind", a.ID, "my-module:1,mr-module:1", []string{"--grace", "1s"},
			map[string]string{"CALC_SLEEP": "60"})
		blind.Walltime = 4 * time.Second
		id2, err := s.Submit(e.ctx, blind)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Cancel(context.Background(), id2) })
		victim2 := e.runningCalc(t, a.ID, 30*time.Second, victim1.PilotID)
		t.Logf("task %d (%s) running on pilot %d after %v", victim2.ID, victim2.Body, victim2.PilotID, time.Since(t0))
		res = waitFinal(t, s, []batch.JobID{id2}, 30*time.Second)
		t.Logf("job %s: %+v after %v", id2, res[id2], time.Since(t0))
		require.Equal(t, batch.Timeout, res[id2].State, "killed at its walltime: %+v", res[id2])
		e.requireInfraFirst(t, victim2.ID)

		second := e.pilotSpec(t, "sbx-second", a.ID, "my-module:2,mr-module:1", nil,
			pbsJobEnv(e, srv, map[string]string{"CALC_SLEEP": "0.2"}))
		id3, err := s.Submit(e.ctx, second)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Cancel(context.Background(), id3) })

		e.appDone(t, a.ID, primesDone, 60*time.Second)
		t.Logf("app done after %v", time.Since(t0))
		require.EqualValues(t, 168, e.semaphore(t, a.ID))
		e.checkInterrupted(t, a.ID, victim1.ID)
		e.checkInterrupted(t, a.ID, victim2.ID)
		res = waitFinal(t, s, []batch.JobID{id3}, 30*time.Second)
		require.Equal(t, batch.Completed, res[id3].State, "%+v", res[id3])
	})
}
