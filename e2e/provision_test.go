package e2e_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/provision"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/slurm"
)

// putSite registers a site built from YAML with the broker.
func (e *env) putSite(t *testing.T, yml string) *site.Spec {
	t.Helper()
	s, err := site.Parse("site.yaml", []byte(yml))
	require.NoError(t, err)
	js, err := json.Marshal(s)
	require.NoError(t, err)
	_, err = e.client.SitePut(e.ctx, &api.Site{Name: s.Name, Kind: s.Kind, Spec: js})
	require.NoError(t, err)
	return s
}

// slurmSiteYAML is a Slurm site whose pilots reach the test's broker.
func (e *env) slurmSiteYAML(t *testing.T, name, binary, extra string) string {
	t.Helper()
	envJSON, err := json.Marshal(e.jobEnv(t))
	require.NoError(t, err)
	return fmt.Sprintf(`name: %s
kind: slurm
broker: %s
pilot:
  binary: %s
  cores: 1
  memory: 200M
  walltime: 5m
  grace: 2s
  slots: {my-module: 2, mr-module: 1}
  env: %s
limits: {max_pilots: 2, max_queued: 2, idle_timeout: 4s}
%s`, name, e.url, binary, envJSON, extra)
}

func slurmSchedulers(clientEnv []string) provision.SchedulerFor {
	return func(s *site.Spec) (batch.Scheduler, error) {
		if s.Kind != "slurm" {
			return nil, fmt.Errorf("site %s: not slurm", s.Name)
		}
		return slurm.New(batch.Exec{Env: clientEnv}), nil
	}
}

// TestProvisionerRunsAppPrimesOnSlurm: nobody submits anything by hand.
// app-primes' modules name site `hpc`; the provisioner sees the backlog,
// submits pilot jobs to the real Slurm cluster within the site's limits,
// the pilots run the app to the right total and retire when idle, and the
// broker records every pilot job through to COMPLETED.
func TestProvisionerRunsAppPrimesOnSlurm(t *testing.T) {
	t.Parallel()
	clientEnv := slurmCluster(t)
	t0 := time.Now()
	logDir, err := os.MkdirTemp("", "scalebox-e2e-jobs-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(logDir) })
	e, prov := newProvisionedBroker(t, broker.Config{LeaseTTL: 5 * time.Second}, provision.Config{
		Interval: 300 * time.Millisecond, MaxInterval: time.Second, Schedulers: slurmSchedulers(clientEnv), LogDir: logDir,
	})
	e.putSite(t, e.slurmSiteYAML(t, "hpc", scaleboxBinary(t), ""))
	checkJobLogs(t, filepath.Join(logDir, "hpc", "*.out"))
	go func() { _ = prov.Run(e.ctx) }()

	a := e.createPrimes(t, "provisioned", "CLUSTER=hpc")
	for _, m := range a.Modules {
		require.Equal(t, "hpc", m.Site, "module %s", m.Name)
	}
	e.appDone(t, a.ID, primesDone, 90*time.Second)
	t.Logf("app done after %v", time.Since(t0))
	require.EqualValues(t, 168, e.semaphore(t, a.ID))

	// Every pilot job ends COMPLETED (its pilots idle out), within max_pilots.
	var jobs []api.PilotJob
	require.True(t, assertEventually(func() bool {
		var err error
		jobs, err = e.client.PilotJobList(e.ctx, "hpc", a.ID, false)
		require.NoError(t, err)
		for _, j := range jobs {
			if !j.Final {
				return false
			}
		}
		return len(jobs) > 0
	}, 60*time.Second, 100*time.Millisecond), "pilot jobs still running: %+v", jobs)
	// A job still pending when the backlog is gone is cancelled by the
	// provisioner (the app can finish within a second); any other ends
	// COMPLETED.
	submitted, completed := 0, 0
	for _, j := range jobs {
		require.Contains(t, []string{string(batch.Completed), string(batch.Cancelled)}, j.State, "%+v", j)
		require.NotEmpty(t, j.JobID)
		submitted += j.Count
		if j.State == string(batch.Completed) {
			completed += j.Count
		}
	}
	require.LessOrEqual(t, submitted, 2, "max_pilots")
	require.Positive(t, completed, "the app ran in a pilot job that completed")
	ps, err := e.client.PilotList(e.ctx)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(ps), completed, "every pilot of a completed job registered")
	require.LessOrEqual(t, len(ps), submitted)
	pilots := len(ps)
	for _, p := range ps {
		require.Equal(t, "hpc", p.Site)
		require.Equal(t, "GONE", p.Status, "pilot %d (%s) retired cleanly", p.ID, p.JobID)
	}
	s, err := e.client.SiteGet(e.ctx, "hpc")
	require.NoError(t, err)
	require.NotNil(t, s.Provisioning)
	require.Zero(t, s.Provisioning.Failures)
	t.Logf("%d pilot jobs, %d pilots, all completed after %v", len(jobs), pilots, time.Since(t0))
}

// TestProvisionerBacksOffFailedStarts: a site with a partition Slurm does
// not have, and one whose pilot binary is missing on the nodes. Each is
// reported with Slurm's own message (the refusal; the job's output), and
// the provisioner backs off instead of resubmitting.
func TestProvisionerBacksOffFailedStarts(t *testing.T) {
	t.Parallel()
	clientEnv := slurmCluster(t)
	logDir, err := os.MkdirTemp("", "scalebox-e2e-jobs-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(logDir) })
	e, prov := newProvisionedBroker(t, broker.Config{}, provision.Config{
		Interval: 100 * time.Millisecond, Backoff: time.Hour, Schedulers: slurmSchedulers(clientEnv), LogDir: logDir,
	})
	e.putSite(t, e.slurmSiteYAML(t, "badpart", scaleboxBinary(t), "scheduler: {partition: nope}\n"))
	e.putSite(t, e.slurmSiteYAML(t, "nobin", "/nonexistent/scalebox", ""))
	a1 := e.createPrimes(t, "badpart", "CLUSTER=badpart")
	a2 := e.createPrimes(t, "nobin", "CLUSTER=nobin")

	jobsOf := func(siteName string) []api.PilotJob {
		js, err := e.client.PilotJobList(e.ctx, siteName, 0, false)
		require.NoError(t, err)
		return js
	}
	// Cycle by hand until both failures are known.
	require.True(t, assertEventually(func() bool {
		_ = prov.Cycle(e.ctx)
		b, n := jobsOf("badpart"), jobsOf("nobin")
		return len(b) > 0 && len(n) > 0 && n[0].Final
	}, 60*time.Second, 100*time.Millisecond))

	bad := jobsOf("badpart")
	require.Len(t, bad, 1)
	require.Equal(t, "REFUSED", bad[0].State)
	require.EqualValues(t, a1.ID, bad[0].AppID)
	require.Contains(t, bad[0].Reason, "invalid partition", "Slurm's own message")

	nobin := jobsOf("nobin")
	require.Len(t, nobin, 1)
	require.Equal(t, string(batch.Failed), nobin[0].State, "%+v", nobin[0])
	require.EqualValues(t, a2.ID, nobin[0].AppID)
	require.Contains(t, nobin[0].Reason, "failed before any pilot started")
	require.Contains(t, nobin[0].Reason, "/nonexistent/scalebox", "the job's output names the missing binary")

	t.Logf("refused: %s", bad[0].Reason)
	t.Logf("failed: %s", nobin[0].Reason)
	// Backed off: more cycles submit nothing.
	for range 5 {
		_ = prov.Cycle(e.ctx)
	}
	require.Len(t, jobsOf("badpart"), 1)
	require.Len(t, jobsOf("nobin"), 1)
	for _, name := range []string{"badpart", "nobin"} {
		s, err := e.client.SiteGet(e.ctx, name)
		require.NoError(t, err)
		require.Equal(t, 1, s.Provisioning.Failures, name)
		require.NotNil(t, s.Provisioning.BackoffUntil, name)
		require.True(t, strings.Contains(s.Provisioning.LastError, "partition") || strings.Contains(s.Provisioning.LastError, "nonexistent"),
			"%s: %s", name, s.Provisioning.LastError)
	}
}
