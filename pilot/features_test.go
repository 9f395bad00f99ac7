package pilot_test

// Ports of Scalebox's feature tests (the reference's features/ apps:
// retry_test, timeout-gen, check_test, side-car, task_batch_size). Each
// test runs one app on a real broker (SQLite, over HTTP) with a real
// pilot in-process and real bash module scripts; every wait is on a
// condition observed through the broker's API (or a file a module script
// writes), never a sleep.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/pilot"
)

// goPilot starts an in-process pilot for an app and returns a function
// that stops it (as SIGTERM would: leasing stops, running tasks finish,
// teardown runs) and returns its stats. The test's cleanup stops it if
// the test did not.
func (e *env) goPilot(t *testing.T, appID int64, slots map[string]int) func() *pilot.Stats {
	t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan *pilot.Stats, 1)
	log := zaptest.NewLogger(t).Named("pilot")
	go func() {
		st, err := pilot.Run(ctx, pilot.Config{Broker: e.url, AppID: appID, Slots: slots, Host: "node-a",
			Scratch: filepath.Join(e.dir, "scratch"), Grace: 5 * time.Second, Log: log})
		if err != nil {
			t.Errorf("pilot: %v", err)
		}
		done <- st
	}()
	var once sync.Once
	var stats *pilot.Stats
	stop := func() *pilot.Stats {
		once.Do(func() {
			cancel()
			select {
			case stats = <-done:
			case <-time.After(60 * time.Second):
				t.Errorf("pilot still running 60 s after it was stopped")
			}
		})
		return stats
	}
	t.Cleanup(func() { stop() })
	return stop
}

// lines returns the non-empty lines of a file ("" if it does not exist).
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// features/retry_test: task 0 (the start task) emits 1, 2, 3 to its own
// module; each task exits with body % 4. With "['1:3','2:2','*']" a task
// exiting 1 gets 3 retries, one exiting 2 gets 2, any other non-zero code
// one ("*" without a count is 1): 1 + 4 + 3 + 2 = 10 attempts.
func TestFeatureRetryRules(t *testing.T) {
	t.Parallel()
	for name, rules := range map[string]string{
		"scalebox list":    `"['1:3','2:2','*']"`,
		"yaml map":         `{1: 3, 2: 2, '*': 1}`,
		"yaml map, quoted": `{'1': 3, '2': 2, '*': 1}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.script(t, "retry/run.sh", `
if [ "$1" = 0 ]; then
  for i in 1 2 3; do echo "$i" >> "$WORK_DIR/sink-tasks.txt"; done
fi
echo "body=$1 attempt=$TASK_ATTEMPT"
exit $(( $1 % 4 ))
`)
			a := e.createApp(t, `
name: retry-test
modules:
  retry:
    arguments: {code_path: "${DIR}/retry"}
    sink_modules: [retry]
    parameters:
      start_task: "0"
      retry_rules: `+rules+`
`)
			stats := e.runPilot(t, a.ID, map[string]int{"retry": 2})
			require.EqualValues(t, 1, stats.Succeeded.Load())
			require.EqualValues(t, 9, stats.Failed.Load())

			want := map[string]struct{ status, attempts int }{
				"0": {0, 1}, // OK at once
				"1": {1, 4}, // 1 + 3 retries
				"2": {2, 3}, // 1 + 2 retries
				"3": {3, 2}, // "*": 1 + 1 retry
			}
			tasks := e.tasks(t, a.ID, "retry")
			require.Len(t, tasks, 4, "%+v", tasks)
			rows := 0
			for _, tk := range tasks {
				w, ok := want[tk.Body]
				require.True(t, ok, "unexpected task %q", tk.Body)
				as := e.attempts(t, tk.ID)
				rows += len(as)
				require.Equal(t, w.status, tk.Status, "task %s: %+v", tk.Body, as)
				require.Equal(t, w.attempts, tk.Attempts, "task %s: %+v", tk.Body, as)
				require.Len(t, as, w.attempts, "task %s", tk.Body)
				require.Equal(t, 0, tk.InfraFailures, "task %s", tk.Body)
				for i, at := range as {
					require.Equal(t, "app", at.Kind, "task %s attempt %d", tk.Body, i+1)
					require.Equal(t, w.status, at.ExitCode, "task %s attempt %d", tk.Body, i+1)
					require.Equal(t, w.status, at.Code, "task %s attempt %d", tk.Body, i+1)
					require.Equal(t, i+1, at.Attempt, "task %s", tk.Body)
					require.Equal(t, fmt.Sprintf("body=%s attempt=%d\n", tk.Body, i+1), at.Stdout)
				}
			}
			require.Equal(t, 10, rows, "attempt rows (t_task_exec) in total")
		})
	}
}

// retry_backoff (HPC addition): a failed task waits before each retry,
// twice as long each time up to retry_backoff_max, in RETRY_WAIT; the
// attempts still spend retry_rules as without a backoff.
func TestFeatureRetryBackoff(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a := e.createApp(t, `
name: retry-backoff
modules:
  flaky:
    command: /bin/false
    parameters:
      start_task: "x"
      retry_rules: "['1:2']"
      retry_backoff: 0.4s
      retry_backoff_max: 0.6
`)
	stats := e.runPilot(t, a.ID, nil)
	require.EqualValues(t, 3, stats.Failed.Load())
	tasks := e.tasks(t, a.ID, "flaky")
	require.Len(t, tasks, 1)
	require.Equal(t, 1, tasks[0].Status)
	as := e.attempts(t, tasks[0].ID)
	require.Len(t, as, 3)
	for i, wait := range []time.Duration{400 * time.Millisecond, 600 * time.Millisecond} {
		gap := as[i+1].ProgramStart.Sub(*as[i].ProgramEnd)
		require.GreaterOrEqual(t, gap, wait, "retry %d waited its backoff", i+1)
		require.Equal(t, "app", as[i].Kind)
	}
}

// features/timeout-gen: a program that outlives task_max_seconds is
// killed (its process group) and the attempt ends with 124, about
// task_max_seconds after it started. 124 is retried only if the
// retry_rules list it ("*" aside).
func TestFeatureTimeoutGen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	body := `
for i in $(seq 1 20); do date; sleep 1; done
echo "not killed"
`
	e.script(t, "gen/run.sh", body)
	e.script(t, "listed/run.sh", body)
	a := e.createApp(t, `
name: timeout-gen
modules:
  gen:
    arguments: {code_path: "${DIR}/gen"}
    parameters: {start_task: "x", task_max_seconds: 2, retry_rules: "['1:3','2:2']"}
  listed:
    arguments: {code_path: "${DIR}/listed"}
    parameters: {start_task: "x", task_max_seconds: 2, retry_rules: "['124:1']"}
`)
	start := time.Now()
	e.runPilot(t, a.ID, map[string]int{"gen": 1, "listed": 1})
	require.Less(t, time.Since(start), 30*time.Second)

	check := func(module string, attempts int) {
		t.Helper()
		ts := e.tasks(t, a.ID, module)
		require.Len(t, ts, 1, module)
		as := e.attempts(t, ts[0].ID)
		require.Equal(t, 124, ts[0].Status, "%s: %+v", module, as)
		require.Equal(t, attempts, ts[0].Attempts, "%s: %+v", module, as)
		require.Len(t, as, attempts, module)
		for _, at := range as {
			require.Equal(t, "app", at.Kind, module)
			require.Equal(t, 124, at.Code, module)
			require.Equal(t, 124, at.ExitCode, module)
			require.Contains(t, at.Reason, "task_max_seconds=2", module)
			require.NotContains(t, at.Stdout, "not killed", module)
			n := strings.Count(at.Stdout, "\n")
			require.GreaterOrEqual(t, n, 1, "%s: it printed the date before it was killed: %q", module, at.Stdout)
			require.LessOrEqual(t, n, 4, "%s: about task_max_seconds of output: %q", module, at.Stdout)
			require.NotNil(t, at.ProgramStart, module)
			require.NotNil(t, at.ProgramEnd, module)
			ran := at.ProgramEnd.Sub(*at.ProgramStart)
			require.GreaterOrEqual(t, ran, 2*time.Second, "%s: killed at task_max_seconds, not before", module)
			require.Less(t, ran, 10*time.Second, "%s: killed at task_max_seconds, not after the 20 s", module)
		}
	}
	check("gen", 1)    // 124 not in the rules: no retry
	check("listed", 2) // '124:1': one retry
}

// features/check_test: the module's check.sh (in code_path) gates the
// fetching of tasks; while it exits non-zero nothing is leased and the
// task stays READY, then once it succeeds the task runs, once.
func TestFeatureCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	flag := filepath.Join(e.dir, "flag")
	counter := filepath.Join(e.dir, "checks.txt")
	runs := filepath.Join(e.dir, "runs.txt")
	e.script(t, "chk/check.sh", `
if [ -e "$FLAG_FILE" ]; then echo ok >> "$CHECK_COUNTER"; exit 0; fi
echo refused >> "$CHECK_COUNTER"
exit 1
`)
	e.script(t, "chk/run.sh", `
[ -e "$FLAG_FILE" ] || { echo "ran without the flag" >&2; exit 3; }
echo "check_test done! $1" >> "$RUNS"
echo "check_test done!"
`)
	a := e.createApp(t, `
name: check-test
modules:
  chk:
    arguments: {code_path: "${DIR}/chk", poll_interval_seconds: 1}
    environments: ["FLAG_FILE=${DIR}/flag", "CHECK_COUNTER=${DIR}/checks.txt", "RUNS=${DIR}/runs.txt"]
    parameters: {start_task: "ANY"}
`)
	ts := e.tasks(t, a.ID, "chk")
	require.Len(t, ts, 1)
	id := ts[0].ID
	stop := e.goPilot(t, a.ID, map[string]int{"chk": 1})

	// The check has refused twice: the pilot polled (and waited its poll
	// interval) at least once after a refusal, and leased nothing.
	require.Eventually(t, func() bool { return len(lines(t, counter)) >= 2 }, 20*time.Second, 10*time.Millisecond,
		"check.sh ran at least twice")
	d, err := e.client.TaskGet(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, "READY", d.Task.StatusName, "%+v", d.Task)
	require.Equal(t, 0, d.Task.Attempts)
	require.Empty(t, d.Attempts)
	require.Zero(t, d.Task.PilotID)
	require.Empty(t, lines(t, runs))
	require.Equal(t, []string{"refused"}, slices.Compact(lines(t, counter)))

	// The flag appears: the next check succeeds and the task runs once.
	require.NoError(t, os.WriteFile(flag, nil, 0o644))
	e.waitTasks(t, a.ID, "chk", 20*time.Second, "the task OK", allOK(1))
	stats := stop()
	require.EqualValues(t, 1, stats.Leased.Load())
	require.EqualValues(t, 1, stats.Succeeded.Load())
	require.EqualValues(t, 0, stats.Failed.Load())
	d, err = e.client.TaskGet(e.ctx, id)
	require.NoError(t, err)
	require.Equal(t, 1, d.Task.Attempts)
	require.Len(t, d.Attempts, 1)
	require.Equal(t, "check_test done!\n", d.Attempts[0].Stdout)
	require.Equal(t, []string{"check_test done! ANY"}, lines(t, runs), "run.sh ran exactly once")
	checks := lines(t, counter)
	require.Contains(t, checks, "ok")
	first := slices.Index(checks, "ok")
	require.GreaterOrEqual(t, first, 2)
	for _, c := range checks[:first] {
		require.Equal(t, "refused", c)
	}
}

// sidecar writes setup.sh, check.sh, run.sh and teardown.sh into dir, each
// appending its name (with suffix) to $SIDECAR_LOG; setup.sh first runs
// setupPrefix.
func (e *env) sidecar(t *testing.T, dir, suffix, setupPrefix string) {
	t.Helper()
	for _, n := range []string{"setup", "check", "run", "teardown"} {
		body := `echo "` + n + suffix + `" >> "$SIDECAR_LOG"` + "\n"
		if n == "setup" {
			body = setupPrefix + "\n" + body
		}
		if n == "run" {
			body += `echo "In file:$0"` + "\n" + `echo "message:$1"` + "\n"
		}
		e.script(t, filepath.Join(dir, n+suffix+".sh"), body)
	}
}

// requireSidecarOrder asserts that the log is one setup, checks, one run
// (after at least one check), maybe more checks, and one teardown last.
func requireSidecarOrder(t *testing.T, log []string, suffix string) {
	t.Helper()
	setup, check, run, teardown := "setup"+suffix, "check"+suffix, "run"+suffix, "teardown"+suffix
	count := map[string]int{}
	for _, l := range log {
		count[l]++
	}
	require.Equal(t, 1, count[setup], "%q", log)
	require.Equal(t, 1, count[run], "%q", log)
	require.Equal(t, 1, count[teardown], "%q", log)
	require.Equal(t, len(log)-3, count[check], "only the side-car scripts ran: %q", log)
	r := slices.Index(log, run)
	require.Less(t, slices.Index(log, setup), r, "setup before run: %q", log)
	require.Contains(t, log[:r], check, "check before run: %q", log)
	require.Equal(t, teardown, log[len(log)-1], "teardown last: %q", log)
}

// features/side-car: setup.sh, check.sh, run.sh and teardown.sh from
// code_path, or the scripts named by ACTION_SETUP, ACTION_CHECK,
// ACTION_RUN and ACTION_TEARDOWN instead.
func TestFeatureSideCar(t *testing.T) {
	t.Parallel()

	t.Run("code_path scripts", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.sidecar(t, "sc", "", "")
		log := filepath.Join(e.dir, "sidecar.log")
		a := e.createApp(t, `
name: side-car
modules:
  sc:
    arguments: {code_path: "${DIR}/sc", poll_interval_seconds: 1}
    environments: ["SIDECAR_LOG=${DIR}/sidecar.log"]
    parameters: {start_task: "0"}
`)
		stats := e.runPilot(t, a.ID, map[string]int{"sc": 1})
		require.EqualValues(t, 1, stats.Succeeded.Load())
		ts := e.tasks(t, a.ID, "sc")
		require.Len(t, ts, 1)
		require.Equal(t, 0, ts[0].Status)
		at := e.attempts(t, ts[0].ID)[0]
		require.Equal(t, "In file:"+filepath.Join(e.dir, "sc", "run.sh")+"\nmessage:0\n", at.Stdout)
		requireSidecarOrder(t, lines(t, log), "")
	})

	t.Run("ACTION_ environments", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.sidecar(t, "sc", "", "")        // the defaults, which must not run
		e.sidecar(t, "sc", "-custom", "") // the ones the environments name
		log := filepath.Join(e.dir, "sidecar.log")
		a := e.createApp(t, `
name: side-car-custom
modules:
  sc:
    arguments: {code_path: "${DIR}/sc", poll_interval_seconds: 1}
    environments:
      - SIDECAR_LOG=${DIR}/sidecar.log
      - ACTION_RUN=${DIR}/sc/run-custom.sh
      - ACTION_SETUP=${DIR}/sc/setup-custom.sh
      - ACTION_CHECK=${DIR}/sc/check-custom.sh
      - ACTION_TEARDOWN=${DIR}/sc/teardown-custom.sh
    parameters: {start_task: "0"}
`)
		stats := e.runPilot(t, a.ID, map[string]int{"sc": 1})
		require.EqualValues(t, 1, stats.Succeeded.Load())
		ts := e.tasks(t, a.ID, "sc")
		require.Len(t, ts, 1)
		require.Equal(t, 0, ts[0].Status)
		at := e.attempts(t, ts[0].ID)[0]
		require.Equal(t, "In file:"+filepath.Join(e.dir, "sc", "run-custom.sh")+"\nmessage:0\n", at.Stdout)
		requireSidecarOrder(t, lines(t, log), "-custom")
	})

	// Scalebox's slot loop runs setup.sh once when the slot starts and
	// check.sh only after it, before each fetch (spec §1.4): a check may
	// rely on what setup prepared. Here setup.sh takes a while, so a
	// check that does not wait for it runs first.
	t.Run("setup before the first check", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		e.sidecar(t, "sc", "", "sleep 1")
		log := filepath.Join(e.dir, "sidecar.log")
		a := e.createApp(t, `
name: side-car-slow-setup
modules:
  sc:
    arguments: {code_path: "${DIR}/sc", poll_interval_seconds: 1}
    environments: ["SIDECAR_LOG=${DIR}/sidecar.log"]
    parameters: {start_task: "0"}
`)
		e.runPilot(t, a.ID, map[string]int{"sc": 1})
		got := lines(t, log)
		require.NotEmpty(t, got)
		require.Equal(t, "setup", got[0], "setup.sh ran before any check.sh: %q", got)
		requireSidecarOrder(t, got, "")
	})
}

// runBatchApp runs features/task_batch_size: 20 tasks (000…019) all
// queued before a pilot with one slot starts, task_batch_size 6 (a
// module argument). It checks what holds for any batching (every task OK
// after one attempt, in exactly one batch of at most 6, the tasks of a
// batch sharing its attempt record) and returns the batch sizes in the
// order run.sh saw them.
func runBatchApp(t *testing.T) []int {
	t.Helper()
	e := newEnv(t)
	sizes := filepath.Join(e.dir, "batch-sizes.txt")
	bodies := filepath.Join(e.dir, "bodies.txt")
	e.script(t, "batch/run.sh", `
set -e
[ "$BATCH_FILE" = "$WORK_DIR/input-messages.txt" ] || { echo "BATCH_FILE=$BATCH_FILE" >&2; exit 3; }
[ "$TASK_BATCH_SIZE" = 6 ] || { echo "TASK_BATCH_SIZE=$TASK_BATCH_SIZE" >&2; exit 4; }
wc -l < "$BATCH_FILE" | tr -d ' ' >> "$SIZES"
cut -d, -f2 "$BATCH_FILE" >> "$BODIES"
`)
	a := e.createApp(t, `
name: task-batch-size
modules:
  batch:
    arguments: {code_path: "${DIR}/batch", task_batch_size: 6}
    environments: ["SIZES=${DIR}/batch-sizes.txt", "BODIES=${DIR}/bodies.txt"]
`)
	var in []api.TaskInput
	var want []string
	for i := 0; i < 20; i++ {
		b := fmt.Sprintf("%03d", i)
		in = append(in, api.TaskInput{Module: "batch", Body: b})
		want = append(want, b)
	}
	r, err := e.client.TaskAdd(e.ctx, a.ID, &api.TaskAddRequest{Tasks: in})
	require.NoError(t, err)
	require.Equal(t, 20, r.Inserted)

	stats := e.runPilot(t, a.ID, map[string]int{"batch": 1})
	require.EqualValues(t, 20, stats.Succeeded.Load())
	require.EqualValues(t, 0, stats.Failed.Load())

	// Every task OK after one attempt; the tasks of one batch share the
	// attempt's record (one program run).
	tasks := e.tasks(t, a.ID, "batch")
	require.Len(t, tasks, 20)
	runs := map[time.Time]int{}
	for _, tk := range tasks {
		as := e.attempts(t, tk.ID)
		require.Equal(t, 0, tk.Status, "%s: %+v", tk.Body, as)
		require.Equal(t, 1, tk.Attempts, tk.Body)
		require.Len(t, as, 1, tk.Body)
		require.NotNil(t, as[0].ProgramStart, tk.Body)
		runs[as[0].ProgramStart.UTC()]++
	}

	var got []int
	sum := 0
	for _, l := range lines(t, sizes) {
		n, err := strconv.Atoi(l)
		require.NoError(t, err, l)
		require.GreaterOrEqual(t, n, 1, "batch sizes %q", lines(t, sizes))
		require.LessOrEqual(t, n, 6, "batch sizes %q", lines(t, sizes))
		got = append(got, n)
		sum += n
	}
	t.Logf("batch sizes: %v", got)
	require.Equal(t, 20, sum, "batch sizes %v", got)
	require.Len(t, runs, len(got), "one attempt record per run.sh call")
	var perRun []int
	for _, n := range runs {
		perRun = append(perRun, n)
	}
	require.ElementsMatch(t, got, perRun, "the tasks of a batch share its attempt record")
	seen := lines(t, bodies)
	slices.Sort(seen)
	require.Equal(t, want, seen, "every task in exactly one batch")
	return got
}

// features/task_batch_size: with task_batch_size 6, a slot fetches up to 6
// tasks and runs run.sh once for all of them, listed in
// ${WORK_DIR}/input-messages.txt (BATCH_FILE); every task of the batch
// gets the attempt's result.
func TestFeatureTaskBatchSize(t *testing.T) {
	t.Parallel()

	t.Run("batches", func(t *testing.T) {
		t.Parallel()
		got := runBatchApp(t)
		require.Greater(t, slices.Max(got), 1, "at least one batch of several tasks: %v", got)
	})

	// Scalebox's slot fetches up to task_batch_size tasks per poll, so with
	// the whole backlog queued before the slot starts every batch but the
	// last is full.
	t.Run("full batches while the backlog lasts", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, []int{6, 6, 6, 2}, runBatchApp(t))
	})
}
