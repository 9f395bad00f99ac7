// Package e2e_test runs Scalebox's app-primes example end to end through
// pilots submitted as REAL batch jobs: to a real single-node Slurm cluster
// (scripts/slurm-cluster.sh, started once per test binary) and to the
// OpenPBS test double (pbs/pbstest). The broker runs in-process on a real
// loopback listener so that the jobs' pilots (the built scalebox binary)
// reach it over HTTP, with auth off.
//
// Without the Slurm binaries the package fails, unless SCALEBOX_SKIP_SLURM=1
// (then the Slurm tests skip and say why). Every wait polls the broker's API
// or the scheduler; nothing sleeps to synchronise.
package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/provision"
	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

// ---------------------------------------------------------------------------
// Test binary set-up: the scalebox binary and the Slurm cluster, each made
// once, on first use (internal/testenv), and removed/stopped by TestMain.

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	if err := pgtest.Stop(); err != nil && code == 0 {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func repoPath(rel string) string { return testenv.Repo(rel) }

func scaleboxBinary(t *testing.T) string { return testenv.Scalebox(t) }

func slurmCluster(t *testing.T) []string { return testenv.SlurmCluster(t) }

// ---------------------------------------------------------------------------
// The broker and app-primes.

type env struct {
	t      *testing.T
	ctx    context.Context
	client *api.Client
	url    string
	dir    string // the test's files: job outputs, scratch, the slow app
}

// newBroker starts a broker with cfg on a fresh SQLite store, on a real
// listener on 127.0.0.1 (batch jobs are other processes), auth off.
func newBroker(t *testing.T, cfg broker.Config) *env {
	t.Helper()
	return startBroker(t, cfg, nil)
}

// newProvisionedBroker is newBroker with a provisioner over the same store;
// the test runs its cycles (prov.Run or prov.Cycle).
func newProvisionedBroker(t *testing.T, cfg broker.Config, pcfg provision.Config) (*env, *provision.Provisioner) {
	t.Helper()
	var p *provision.Provisioner
	e := startBroker(t, cfg, func(st store.Store) broker.Provisioner {
		p = provision.New(st, pcfg, zaptest.NewLogger(t).Named("provision"))
		return p
	})
	return e, p
}

func startBroker(t *testing.T, cfg broker.Config, prov func(store.Store) broker.Provisioner) *env {
	t.Helper()
	ctx := t.Context()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	if prov != nil {
		cfg.Provisioner = prov(st)
	}
	b := broker.New(st, cfg, zaptest.NewLogger(t).Named("broker"))
	require.NoError(t, b.Start(context.Background()))
	srv := httptest.NewServer(b.Handler()) // listens on 127.0.0.1
	t.Cleanup(func() { b.Close(); srv.Close() })
	dir, err := os.MkdirTemp("", "scalebox-e2e-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return &env{t: t, ctx: ctx, client: api.NewClient(srv.URL, ""), url: srv.URL, dir: dir}
}

// appVars are the variables of app-primes' scalebox.env, with overrides.
func appVars(t *testing.T, over map[string]string) map[string]string {
	t.Helper()
	f, err := os.Open(repoPath("examples/app-primes/scalebox.env"))
	require.NoError(t, err)
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		require.True(t, ok, line)
		vars[k] = v
	}
	require.NoError(t, sc.Err())
	vars["PWD"] = repoPath("examples/app-primes")
	vars["NUM_GROUPS"] = "10"
	for k, v := range over {
		vars[k] = v
	}
	return vars
}

// createPrimes creates app-primes as it is, with start task 1000, its
// modules on site `local` or on the site named by a CLUSTER variable.
func (e *env) createPrimes(t *testing.T, tag string, vars ...string) *api.App {
	t.Helper()
	yml, err := os.ReadFile(repoPath("examples/app-primes/app.yaml"))
	require.NoError(t, err)
	over := map[string]string{"TAG": tag}
	for _, kv := range vars {
		k, v, _ := strings.Cut(kv, "=")
		over[k] = v
	}
	a, err := e.client.AppCreate(e.ctx, &api.AppCreateRequest{YAML: string(yml), Filename: "app.yaml",
		Vars: appVars(t, over), StartTasks: map[string][]string{"mr-module": {"1000"}}})
	require.NoError(t, err)
	return a
}

// createSlowPrimes creates a variant of app-primes whose calc task first
// sleeps $CALC_SLEEP seconds (from the pilot's environment, so that each
// batch job runs at its own pace) and declares no expected runtime (a
// pilot near its walltime then leases a first calc task whatever its
// length). The router and the sieve are the example's own scripts.
func (e *env) createSlowPrimes(t *testing.T, tag string) *api.App {
	t.Helper()
	yml, err := os.ReadFile(repoPath("examples/app-primes/app.yaml"))
	require.NoError(t, err)
	slow := strings.Replace(string(yml), "code_path: ${PWD}/code", "code_path: ${SLOW}/code", 1)
	require.NotEqual(t, string(yml), slow, "app.yaml: calc code_path not found")
	slow = strings.Replace(slow, "expected_runtime: 30s", "", 1)
	code := filepath.Join(e.dir, "slow", "code")
	require.NoError(t, os.MkdirAll(code, 0o755))
	script := fmt.Sprintf("#!/bin/bash\nsleep \"${CALC_SLEEP:-2}\"\nexec %s \"$@\"\n",
		strconv.Quote(repoPath("examples/app-primes/code/run.sh")))
	require.NoError(t, os.WriteFile(filepath.Join(code, "run.sh"), []byte(script), 0o755))
	a, err := e.client.AppCreate(e.ctx, &api.AppCreateRequest{YAML: slow, Filename: "app.yaml",
		Vars:       appVars(t, map[string]string{"TAG": tag, "SLOW": filepath.Join(e.dir, "slow")}),
		StartTasks: map[string][]string{"mr-module": {"1000"}}})
	require.NoError(t, err)
	return a
}

// jobEnv is the environment of a pilot job: no token (auth is off), the
// test's own HOME and scratch, the race detector halting on a race.
func (e *env) jobEnv(t *testing.T) map[string]string {
	return map[string]string{
		"HOME":                e.dir,
		"PATH":                filepath.Dir(scaleboxBinary(t)) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SCALEBOX_TOKEN":      "",
		"SCALEBOX_TOKEN_FILE": filepath.Join(e.dir, "no-token"),
		"SCALEBOX_SCRATCH":    filepath.Join(e.dir, "scratch"),
		"GORACE":              "halt_on_error=1 atexit_sleep_ms=0",
	}
}

// pilotSpec is the job of `scalebox pilot run` for app appID.
func (e *env) pilotSpec(t *testing.T, name string, appID int64, slots string, extraArgs []string, jobEnv map[string]string) *batch.JobSpec {
	t.Helper()
	bin := scaleboxBinary(t)
	cmd := append([]string{bin, "--broker", e.url, "pilot", "run", "--app-id", strconv.FormatInt(appID, 10),
		"--slots", slots, "--max-idle", "5s", "--log-level", "debug"}, extraArgs...)
	envs := e.jobEnv(t)
	for k, v := range jobEnv {
		envs[k] = v
	}
	return &batch.JobSpec{Name: name, Walltime: 5 * time.Minute, Command: cmd, Env: envs, WorkDir: e.dir,
		CoresPerTask: 1, MemoryMB: 200}
}

// checkJobLogs fails the test if a job output shows a data race or a
// panic, and logs every output when the test failed.
func checkJobLogs(t *testing.T, glob string) {
	t.Helper()
	t.Cleanup(func() {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			out, _ := os.ReadFile(f)
			if strings.Contains(string(out), "DATA RACE") || strings.Contains(string(out), "panic:") {
				t.Errorf("%s: race or panic in the pilot's output", filepath.Base(f))
			}
			if t.Failed() || os.Getenv("E2E_LOGS") != "" {
				t.Logf("output of %s:\n%s", filepath.Base(f), out)
			}
		}
	})
}

// appDone waits until every task of the app is OK, with want[module] tasks.
func (e *env) appDone(t *testing.T, appID int64, want map[string]int64, timeout time.Duration) {
	t.Helper()
	var last *api.App
	settled := false // nothing is left to run, yet the counts are wrong
	ok := assertEventually(func() bool {
		a, err := e.client.AppGet(e.ctx, appID)
		if err != nil {
			return false
		}
		last = a
		done, pending := true, false
		for _, m := range a.Modules {
			for st, n := range m.Counts {
				switch st {
				case "OK":
				case "READY", "QUEUED", "RUNNING", "INITIAL":
					pending = pending || n > 0
					done = done && n == 0
				default:
					done = done && n == 0
				}
			}
			if m.Counts["OK"] != want[m.Name] {
				done = false
			}
		}
		settled = !done && !pending && len(a.Modules) > 0
		return done || settled
	}, timeout, 50*time.Millisecond)
	if !ok || settled {
		counts := map[string]map[string]int64{}
		if last != nil {
			for _, m := range last.Modules {
				counts[m.Name] = m.Counts
			}
		}
		why := fmt.Sprintf("not done after %v", timeout)
		if settled {
			why = "settled with the wrong counts"
		}
		t.Fatalf("app %d %s: %v (want OK: %v)%s", appID, why, counts, want, e.firstFailure(t, last))
	}
}

// firstFailure describes the last attempt of a failed task of app a.
func (e *env) firstFailure(t *testing.T, a *api.App) string {
	if a == nil {
		return ""
	}
	for _, m := range a.Modules {
		for _, task := range e.tasks(t, a.ID, m.Name) {
			if task.Status <= 0 && task.Status >= api.StatusInitial {
				continue
			}
			d, err := e.client.TaskGet(e.ctx, task.ID)
			if err != nil || len(d.Attempts) == 0 {
				continue
			}
			at := d.Attempts[len(d.Attempts)-1]
			return fmt.Sprintf("\nfailed task %d (%s) attempt %d: exit %d, %s\nstdout: %s\nstderr: %s",
				task.ID, m.Name, at.Attempt, at.ExitCode, at.Reason, at.Stdout, at.Stderr)
		}
	}
	return ""
}

// assertEventually polls cond until it holds or timeout passes.
func assertEventually(cond func() bool, timeout, tick time.Duration) bool {
	deadline := time.Now().Add(timeout)
	tk := time.NewTicker(tick)
	defer tk.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tk.C
	}
}

func (e *env) semaphore(t *testing.T, appID int64) int64 {
	t.Helper()
	s, err := e.client.SemaphoreGet(e.ctx, appID, "app-primes:sum_value")
	require.NoError(t, err)
	return s.Value
}

func (e *env) tasks(t *testing.T, appID int64, module string) []api.Task {
	t.Helper()
	l, err := e.client.TaskList(e.ctx, api.TaskListParams{AppID: appID, Module: module, Limit: 1000})
	require.NoError(t, err)
	return l.Tasks
}

// pilotJobIDs are the job ids of the pilots registered so far.
func (e *env) pilotJobIDs(t *testing.T) []string {
	t.Helper()
	ps, err := e.client.PilotList(e.ctx)
	require.NoError(t, err)
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.JobID)
	}
	slices.Sort(ids)
	return ids
}

// runningCalc waits for a calc task RUNNING on a pilot not in notOn and
// returns it.
func (e *env) runningCalc(t *testing.T, appID int64, timeout time.Duration, notOn ...int64) api.Task {
	t.Helper()
	var victim api.Task
	require.Eventually(t, func() bool {
		l, err := e.client.TaskList(e.ctx, api.TaskListParams{AppID: appID, Module: "my-module", Limit: 1000})
		if err != nil {
			return false
		}
		for _, tk := range l.Tasks {
			if tk.Status == -3 && !slices.Contains(notOn, tk.PilotID) {
				victim = tk
				return true
			}
		}
		return false
	}, timeout, 20*time.Millisecond, "a calc task RUNNING")
	return victim
}

// waitFinal polls the scheduler until every id is in a final state.
func waitFinal(t *testing.T, s batch.Scheduler, ids []batch.JobID, timeout time.Duration) map[batch.JobID]batch.JobStatus {
	t.Helper()
	var last map[batch.JobID]batch.JobStatus
	ok := assertEventually(func() bool {
		res, err := s.Status(context.Background(), ids)
		if err != nil {
			t.Logf("status: %v", err)
			return false
		}
		last = res
		for _, id := range ids {
			if !res[id].State.Final() {
				return false
			}
		}
		return true
	}, timeout, 100*time.Millisecond)
	require.True(t, ok, "jobs %v not final after %v: %+v", ids, timeout, last)
	return last
}

// requireInfraFirst asserts that a task's first attempt is infra and that
// no app failure was charged to it.
func (e *env) requireInfraFirst(t *testing.T, taskID int64) {
	t.Helper()
	d, err := e.client.TaskGet(e.ctx, taskID)
	require.NoError(t, err)
	require.NotEmpty(t, d.Attempts)
	require.Equal(t, "infra", d.Attempts[0].Kind, "%+v", d.Attempts)
	require.Equal(t, 0, d.Task.AppFailures, "%+v", d.Attempts)
}

// checkInterrupted asserts that the interrupted calc task has an infra
// attempt (first) and ended OK, and that no task of the app was charged
// an app failure.
func (e *env) checkInterrupted(t *testing.T, appID, victim int64) {
	t.Helper()
	d, err := e.client.TaskGet(e.ctx, victim)
	require.NoError(t, err)
	require.Equal(t, 0, d.Task.Status, "%+v", d.Attempts)
	require.Equal(t, 0, d.Task.AppFailures, "%+v", d.Attempts)
	require.GreaterOrEqual(t, d.Task.InfraFailures, 1, "%+v", d.Attempts)
	require.NotEmpty(t, d.Attempts)
	require.Equal(t, "infra", d.Attempts[0].Kind, "first attempt: %+v", d.Attempts)
	last := d.Attempts[len(d.Attempts)-1]
	require.Equal(t, "app", last.Kind, "%+v", d.Attempts)
	require.Equal(t, 0, last.Code, "%+v", d.Attempts)
	t.Logf("interrupted task %d (%s): attempts %+v", victim, d.Task.Body, d.Attempts)
	for _, m := range []string{"my-module", "mr-module"} {
		for _, tk := range e.tasks(t, appID, m) {
			require.Equal(t, 0, tk.AppFailures, "%s task %s", m, tk.Body)
			require.Equal(t, 0, tk.Status, "%s task %s", m, tk.Body)
		}
	}
}

var primesDone = map[string]int64{"my-module": 10, "mr-module": 11}
