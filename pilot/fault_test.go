package pilot_test

// Fault tests: pilots as real processes (the built scalebox binary) that
// are SIGKILLed or SIGTERMed mid-task, and modules that misbehave. Every
// wait is on a condition observed through the broker's API, never a
// sleep.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
)

// faultTTL is the lease TTL of the fault tests: short, so that a dead
// pilot's leases expire quickly (the broker sweeps every TTL/4 and pilots
// heartbeat every TTL/3).
const faultTTL = 2 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

// scaleboxBinary builds ./cmd/scalebox once per test binary (with -race when
// the tests run with it: a data race in a pilot then shows in its log).
func scaleboxBinary(t *testing.T) string { return testenv.Scalebox(t) }

// pilotProc is a `scalebox pilot run` process in a process group of its own.
type pilotProc struct {
	host  string
	cmd   *exec.Cmd
	log   string
	done  chan struct{}
	err   error // from Wait, once done is closed
	ended time.Time
}

// startPilot runs `scalebox --broker URL pilot run --app-id N --host HOST
// args…` with the broker's auth off (no token) and env added to the test's
// environment. The test's cleanup kills what is left of its group and
// fails the test if its log shows a data race or a panic.
func (e *env) startPilot(t *testing.T, appID int64, host string, args []string, env ...string) *pilotProc {
	t.Helper()
	bin := scaleboxBinary(t)
	logPath := filepath.Join(e.dir, "pilot-"+host+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	defer f.Close()
	argv := append([]string{"--broker", e.url, "pilot", "run", "--app-id", strconv.FormatInt(appID, 10),
		"--host", host, "--log-level", "debug"}, args...)
	cmd := exec.Command(bin, argv...)
	cmd.Env = append(os.Environ(), "SCALEBOX_TOKEN=", "SCALEBOX_TOKEN_FILE="+filepath.Join(e.dir, "no-token"),
		"SCALEBOX_SCRATCH="+filepath.Join(e.dir, "scratch"), "GORACE=halt_on_error=1 atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	p := &pilotProc{host: host, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		p.ended = time.Now()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		out, _ := os.ReadFile(logPath)
		if strings.Contains(string(out), "DATA RACE") || strings.Contains(string(out), "panic:") {
			t.Errorf("pilot %s: race or panic in its log", host)
		}
		if t.Failed() || os.Getenv("FAULT_LOGS") != "" {
			t.Logf("log of pilot %s:\n%s", host, out)
		}
	})
	return p
}

func (p *pilotProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the pilot process only (its tasks are in groups of
// their own, as on a node where the batch system signals the pilot).
func (p *pilotProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// wait waits for the pilot to exit and returns its exit code.
func (p *pilotProc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("pilot %s still running after %v", p.host, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	require.NoError(t, p.err)
	return 0
}

// pilotID is the id of the ACTIVE pilot registered from host.
func (e *env) pilotID(t *testing.T, host string) int64 {
	t.Helper()
	var id int64
	require.Eventually(t, func() bool {
		ps, err := e.client.PilotList(e.ctx)
		if err != nil {
			return false
		}
		for _, p := range ps {
			if p.Host == host && p.Status == "ACTIVE" {
				id = p.ID
				return true
			}
		}
		return false
	}, 20*time.Second, 10*time.Millisecond, "pilot %s registered", host)
	return id
}

func (e *env) pilotStatus(t *testing.T, id int64) string {
	t.Helper()
	ps, err := e.client.PilotList(e.ctx)
	require.NoError(t, err)
	for _, p := range ps {
		if p.ID == id {
			return p.Status
		}
	}
	return ""
}

// waitTasks polls a module's tasks until cond holds.
func (e *env) waitTasks(t *testing.T, appID int64, module string, timeout time.Duration, what string, cond func([]api.Task) bool) []api.Task {
	t.Helper()
	var last []api.Task
	ok := assert.Eventually(t, func() bool {
		l, err := e.client.TaskList(e.ctx, api.TaskListParams{AppID: appID, Module: module, Limit: 1000})
		if err != nil {
			return false
		}
		last = l.Tasks
		return cond(l.Tasks)
	}, timeout, 10*time.Millisecond)
	if !ok {
		t.Fatalf("waiting for %s: last tasks of %s: %+v", what, module, last)
	}
	return last
}

// allOK says whether there are n tasks, all OK.
func allOK(n int) func([]api.Task) bool {
	return func(ts []api.Task) bool {
		if len(ts) != n {
			return false
		}
		for _, tk := range ts {
			if tk.Status != 0 {
				return false
			}
		}
		return true
	}
}

func (e *env) attempts(t *testing.T, taskID int64) []api.Attempt {
	t.Helper()
	d, err := e.client.TaskGet(e.ctx, taskID)
	require.NoError(t, err)
	return d.Attempts
}

func kinds(as []api.Attempt) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Kind
	}
	return out
}

// killOrphans SIGKILLs the process groups of tasks whose pids were
// appended to pidFile and that still run one of this test's scripts: the
// tasks of a SIGKILLed pilot outlive it (nothing sends them a signal).
func killOrphans(t *testing.T, pidFile, scriptDir string) {
	f, err := os.Open(pidFile)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil || pid <= 0 {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), scriptDir) {
			continue // gone (or the pid is someone else's by now)
		}
		t.Logf("killing orphaned task process group %d", pid)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 500 && processRunning(pid); i++ {
			time.Sleep(10 * time.Millisecond) // cleanup only: wait for the kill to land
		}
	}
}

// processRunning: the pid exists and is not a zombie.
func processRunning(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// The work module of the process tests: it sleeps $WORK_SECONDS (from the
// pilot's environment, so each pilot runs at its own pace), then emits
// "n/attempt" to the sum module, which adds n to a semaphore through the
// pilot's proxy.
const workScript = `
echo $$ >> "$PIDS"
sleep "${WORK_SECONDS:-0.1}"
echo "sum,$1/$TASK_ATTEMPT" >> "$WORK_DIR/sink-tasks.txt"
`

const sumScript = `
set -e
n=${1%%/*}
scalebox semaphore increment-n total "$n" > /dev/null
`

const sumApp = `
name: %s
modules:
  work:
    arguments: {code_path: "${DIR}/work"}
    environments: ["PIDS=${DIR}/pids"]
    sink_modules: [sum]
  sum:
    arguments: {code_path: "${DIR}/sum"}
    environments: [SEMAPHORE_AUTO_CREATE=yes]
`

// addWork adds work tasks with bodies 1..n.
func (e *env) addWork(t *testing.T, appID int64, n int) {
	t.Helper()
	var in []api.TaskInput
	for i := 1; i <= n; i++ {
		in = append(in, api.TaskInput{Module: "work", Body: strconv.Itoa(i)})
	}
	r, err := e.client.TaskAdd(e.ctx, appID, &api.TaskAddRequest{Tasks: in})
	require.NoError(t, err)
	require.Equal(t, n, r.Inserted)
}

// checkSums asserts that every work task emitted exactly one sum task
// (bodies "n/attempt"), each of which ran OK once, and that the semaphore
// holds the exact sum 1+…+n.
func (e *env) checkSums(t *testing.T, appID int64, n int) {
	t.Helper()
	sums := e.tasks(t, appID, "sum")
	require.Len(t, sums, n, "one downstream task per work task")
	seen := map[int]bool{}
	for _, s := range sums {
		v, _, _ := strings.Cut(s.Body, "/")
		k, err := strconv.Atoi(v)
		require.NoError(t, err, s.Body)
		require.False(t, seen[k], "duplicate downstream task for %d", k)
		seen[k] = true
		require.Equal(t, 0, s.Status, "sum task %s", s.Body)
		require.Equal(t, 1, s.Attempts, "sum task %s ran once", s.Body)
	}
	sem, err := e.client.SemaphoreGet(e.ctx, appID, "total")
	require.NoError(t, err)
	require.EqualValues(t, n*(n+1)/2, sem.Value)
}

// A pilot SIGKILLed while it runs a task: the lease expires, the task goes
// back to READY as an "infra" attempt (not spending the module's retry
// budget), runs again on the other pilot, and the app ends with the exact
// answer.
func TestFaultPilotKilledMidTask(t *testing.T) {
	t.Parallel()
	scaleboxBinary(t)
	e := newEnvWith(t, broker.Config{LeaseTTL: faultTTL})
	e.script(t, "work/run.sh", workScript)
	e.script(t, "sum/run.sh", sumScript)
	t.Cleanup(func() { killOrphans(t, filepath.Join(e.dir, "pids"), e.dir) })
	a := e.createApp(t, fmt.Sprintf(sumApp, "killed"))
	const n = 8
	e.addWork(t, a.ID, n)

	// Pilot A's tasks would take a minute: one is RUNNING on it when it dies.
	pa := e.startPilot(t, a.ID, "node-a", []string{"--slots", "work:1"}, "WORK_SECONDS=60")
	idA := e.pilotID(t, "node-a")
	var victim api.Task
	e.waitTasks(t, a.ID, "work", 20*time.Second, "a task RUNNING on pilot A", func(ts []api.Task) bool {
		for _, tk := range ts {
			if tk.Status == -3 && tk.PilotID == idA {
				victim = tk
				return true
			}
		}
		return false
	})
	pb := e.startPilot(t, a.ID, "node-b", []string{"--slots", "work:2,sum:1"}, "WORK_SECONDS=0.1")
	idB := e.pilotID(t, "node-b")
	// B is serving before A dies: it has taken work of its own.
	e.waitTasks(t, a.ID, "work", 20*time.Second, "pilot B working", func(ts []api.Task) bool {
		return slices.ContainsFunc(ts, func(tk api.Task) bool { return tk.PilotID == idB || tk.Status == 0 })
	})

	killed := time.Now()
	require.NoError(t, syscall.Kill(-pa.cmd.Process.Pid, syscall.SIGKILL))
	require.Equal(t, -1, pa.wait(t, 5*time.Second), "killed by a signal")

	e.waitTasks(t, a.ID, "work", 20*time.Second, "every work task OK", allOK(n))
	e.waitTasks(t, a.ID, "sum", 20*time.Second, "every sum task OK", allOK(n))
	e.checkSums(t, a.ID, n)

	// The victim: one infra attempt on A (the expired lease), then one OK
	// attempt on B; the module's retry budget is untouched.
	d, err := e.client.TaskGet(e.ctx, victim.ID)
	require.NoError(t, err)
	require.Equal(t, 0, d.Task.Status)
	require.Equal(t, 0, d.Task.AppFailures)
	require.Equal(t, 1, d.Task.InfraFailures)
	require.Equal(t, []string{"infra", "app"}, kinds(d.Attempts), "%+v", d.Attempts)
	inf, ok := d.Attempts[0], d.Attempts[1]
	require.Equal(t, idA, inf.PilotID)
	require.Equal(t, victim.Attempts, inf.Attempt)
	require.Equal(t, -103, inf.Code)
	require.Contains(t, inf.Reason, "lease expired")
	require.NotNil(t, inf.RecordedAt)
	require.True(t, inf.RecordedAt.After(killed), "expired after the kill, not before")
	require.Less(t, inf.RecordedAt.Sub(killed), 2*faultTTL+time.Second, "expired about a TTL after the last heartbeat")
	require.Equal(t, idB, ok.PilotID)
	require.Equal(t, "node-b", ok.Host)
	require.Equal(t, 0, ok.Code)
	require.Equal(t, inf.Attempt+1, ok.Attempt)

	// Every work task ran OK exactly once; only A's leases were lost.
	for _, tk := range e.tasks(t, a.ID, "work") {
		require.Equal(t, 0, tk.AppFailures, tk.Body)
		as := e.attempts(t, tk.ID)
		apps := 0
		for _, at := range as {
			switch at.Kind {
			case "app":
				apps++
				require.Equal(t, 0, at.Code, "task %s: %+v", tk.Body, at)
				require.Equal(t, idB, at.PilotID, "task %s: only B reported results", tk.Body)
			case "infra":
				require.Equal(t, idA, at.PilotID, "task %s: only A's leases expired: %+v", tk.Body, as)
			default:
				t.Fatalf("task %s: unexpected attempt %+v", tk.Body, at)
			}
		}
		require.Equal(t, 1, apps, "task %s ran to the end once: %+v", tk.Body, as)
		require.Equal(t, len(as)-1, tk.InfraFailures, tk.Body)
	}

	// A is marked lost once silent for two TTLs; B drains and exits 0.
	require.Eventually(t, func() bool { return e.pilotStatus(t, idA) == "LOST" }, 20*time.Second, 20*time.Millisecond)
	require.Equal(t, "ACTIVE", e.pilotStatus(t, idB))
	pb.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, pb.wait(t, 20*time.Second))
	require.Equal(t, "GONE", e.pilotStatus(t, idB))
}

// SIGTERM drains a pilot: running tasks finish within --grace and are
// reported, queued ones go back unstarted, and the pilot exits 0. A task
// that outlives the grace is stopped and handed back as an infra attempt.
// Nothing is lost and nothing counts as a failure of the module.
func TestFaultPilotSIGTERMDrains(t *testing.T) {
	t.Parallel()
	scaleboxBinary(t)
	e := newEnvWith(t, broker.Config{LeaseTTL: faultTTL})
	e.script(t, "work/run.sh", workScript)
	e.script(t, "sum/run.sh", sumScript)
	t.Cleanup(func() { killOrphans(t, filepath.Join(e.dir, "pids"), e.dir) })
	a := e.createApp(t, fmt.Sprintf(sumApp, "drained"))
	const n = 8
	e.addWork(t, a.ID, n)

	// A: two slots and a prefetch of two; its tasks take 3 s, well within
	// the grace.
	const grace = 15 * time.Second
	pa := e.startPilot(t, a.ID, "node-a", []string{"--slots", "work:2", "--grace", grace.String()}, "WORK_SECONDS=3")
	idA := e.pilotID(t, "node-a")
	var running, queued []int64
	e.waitTasks(t, a.ID, "work", 20*time.Second, "two tasks RUNNING and two QUEUED on pilot A", func(ts []api.Task) bool {
		running, queued = running[:0], queued[:0]
		for _, tk := range ts {
			switch {
			case tk.PilotID != idA:
			case tk.Status == -3:
				running = append(running, tk.ID)
			case tk.Status == -2:
				queued = append(queued, tk.ID)
			}
		}
		return len(running) == 2 && len(queued) == 2
	})
	sigterm := time.Now()
	pa.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, pa.wait(t, grace+10*time.Second), "a drained pilot exits 0")
	require.Less(t, pa.ended.Sub(sigterm), grace, "the running tasks finished within the grace")
	require.Equal(t, "GONE", e.pilotStatus(t, idA))
	for _, id := range running {
		d, err := e.client.TaskGet(e.ctx, id)
		require.NoError(t, err)
		require.Equal(t, 0, d.Task.Status, "finished during the drain: %+v", d.Attempts)
		require.Equal(t, []string{"app"}, kinds(d.Attempts))
		require.Equal(t, idA, d.Attempts[0].PilotID)
	}
	for _, id := range queued {
		d, err := e.client.TaskGet(e.ctx, id)
		require.NoError(t, err)
		require.Equal(t, -1, d.Task.Status, "handed back: %+v", d.Attempts)
		require.Equal(t, []string{"released"}, kinds(d.Attempts), "handed back unstarted")
		require.Nil(t, d.Attempts[0].ProgramStart)
	}

	// C: one slot, a grace of 1 s and a task that takes a minute: the
	// grace runs out, the task is stopped and handed back as infra.
	pc := e.startPilot(t, a.ID, "node-c", []string{"--slots", "work:1", "--grace", "1s"}, "WORK_SECONDS=60")
	idC := e.pilotID(t, "node-c")
	var cut int64
	e.waitTasks(t, a.ID, "work", 20*time.Second, "a task RUNNING on pilot C", func(ts []api.Task) bool {
		for _, tk := range ts {
			if tk.Status == -3 && tk.PilotID == idC {
				cut = tk.ID
				return true
			}
		}
		return false
	})
	sigterm = time.Now()
	pc.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, pc.wait(t, 20*time.Second))
	require.Less(t, pc.ended.Sub(sigterm), 10*time.Second, "stopped after its grace")
	d, err := e.client.TaskGet(e.ctx, cut)
	require.NoError(t, err)
	require.Equal(t, -1, d.Task.Status, "%+v", d.Attempts)
	require.Equal(t, 0, d.Task.AppFailures)
	require.Equal(t, 1, d.Task.InfraFailures)
	last := d.Attempts[len(d.Attempts)-1]
	require.Equal(t, "infra", last.Kind, "%+v", d.Attempts)
	require.Equal(t, idC, last.PilotID)
	require.Contains(t, last.Reason, "stopped by the pilot")

	// B finishes everything.
	pb := e.startPilot(t, a.ID, "node-b", []string{"--slots", "work:2,sum:2"}, "WORK_SECONDS=0.05")
	idB := e.pilotID(t, "node-b")
	e.waitTasks(t, a.ID, "work", 20*time.Second, "every work task OK", allOK(n))
	e.waitTasks(t, a.ID, "sum", 20*time.Second, "every sum task OK", allOK(n))
	e.checkSums(t, a.ID, n)
	for _, tk := range e.tasks(t, a.ID, "work") {
		as := e.attempts(t, tk.ID)
		require.Equal(t, 0, tk.AppFailures, "%s: %+v", tk.Body, as)
		wantInfra := 0
		if tk.ID == cut {
			wantInfra = 1
		}
		require.Equal(t, wantInfra, tk.InfraFailures, "%s: %+v", tk.Body, as)
		require.Equal(t, "app", as[len(as)-1].Kind)
		if !slices.Contains(running, tk.ID) {
			require.Equal(t, idB, as[len(as)-1].PilotID)
		}
	}
	pb.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, pb.wait(t, 20*time.Second))
}

// Modules that misbehave: the pilot records what went wrong in the
// attempt, reports promptly, and never crashes.
func TestFaultBadModuleOutput(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	pidDir := filepath.Join(e.dir, "bg")
	require.NoError(t, os.MkdirAll(pidDir, 0o755))
	t.Cleanup(func() {
		// The setsid'd child escaped the task's process group on purpose.
		if b, err := os.ReadFile(filepath.Join(pidDir, "escaped")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && processRunning(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	e.script(t, "sinkbad/run.sh", `
cat > "$WORK_DIR/sink-tasks.txt" <<'EOF'
sink,good-1
a,b,c,d
sink,good-2,{"h":"v"}
m,{"unterminated":
good-3
EOF
`)
	e.script(t, "sink/run.sh", `exit 0`)
	e.script(t, "execbad/run.sh", `
echo '{"statusCode": 0, "inputBytes": oops' > "$WORK_DIR/task-exec.json"
exit 7
`)
	// The background child keeps no pipe: the program is done at once.
	e.script(t, "detached/run.sh", `
sleep 60 > /dev/null 2>&1 < /dev/null &
echo $! > `+pidDir+`/detached
echo parent done
`)
	// The background child holds stdout: the pilot waits the executor's
	// pipe grace (5 s) at most, then kills the group.
	e.script(t, "holder/run.sh", `
(echo child says hi; sleep 60) &
echo $! > `+pidDir+`/holder
echo parent done
`)
	// The child leaves the group (setsid) holding stdout: it cannot be
	// killed with the group, but the pilot must not wait for it either.
	e.script(t, "escaper/run.sh", `
setsid bash -c 'echo $$ > `+pidDir+`/escaped; exec sleep 60' &
echo parent done
`)
	e.script(t, "stubborn/run.sh", `
trap 'echo "SIGTERM ignored"' TERM
while :; do sleep 0.05; done
`)
	a := e.createApp(t, `
name: bad-output
modules:
  sinkbad:
    arguments: {code_path: "${DIR}/sinkbad"}
    parameters: {start_task: "x"}
    sink_modules: [sink]
  sink:
    arguments: {code_path: "${DIR}/sink"}
  execbad:
    arguments: {code_path: "${DIR}/execbad"}
    parameters: {start_task: "x"}
  detached:
    arguments: {code_path: "${DIR}/detached"}
    parameters: {start_task: "x"}
  holder:
    arguments: {code_path: "${DIR}/holder"}
    parameters: {start_task: "x"}
  escaper:
    arguments: {code_path: "${DIR}/escaper"}
    parameters: {start_task: "x"}
  stubborn:
    arguments: {code_path: "${DIR}/stubborn"}
    parameters: {start_task: "x", task_max_seconds: 1}
`)
	start := time.Now()
	// runPilot fails the test if pilot.Run returns an error.
	stats := e.runPilot(t, a.ID, nil)
	require.Less(t, time.Since(start), 20*time.Second)
	require.EqualValues(t, 0, stats.Fenced.Load())

	only := func(module string) (api.Task, api.Attempt) {
		t.Helper()
		ts := e.tasks(t, a.ID, module)
		require.Len(t, ts, 1, module)
		as := e.attempts(t, ts[0].ID)
		require.Len(t, as, 1, "%s: %+v", module, as)
		return ts[0], as[0]
	}
	problems := func(at api.Attempt) []string {
		var out []string
		if ps, ok := at.Extra["problems"].([]any); ok {
			for _, p := range ps {
				out = append(out, fmt.Sprint(p))
			}
		}
		return out
	}

	// Malformed sink-tasks.txt lines are problems; the good lines are emitted.
	tk, at := only("sinkbad")
	require.Equal(t, 0, tk.Status)
	ps := problems(at)
	require.Len(t, ps, 2, "%q", ps)
	require.True(t, strings.HasPrefix(ps[0], "sink-tasks.txt:2: "), ps[0])
	require.True(t, strings.HasPrefix(ps[1], "sink-tasks.txt:4: "), ps[1])
	sinks := e.tasks(t, a.ID, "sink")
	bodies := map[string]map[string]string{}
	for _, s := range sinks {
		bodies[s.Body] = s.Headers
		require.Equal(t, 0, s.Status)
	}
	require.Len(t, bodies, 3, "%+v", sinks)
	require.Contains(t, bodies, "good-1")
	require.Contains(t, bodies, "good-3")
	require.Equal(t, "v", bodies["good-2"]["h"])
	require.Equal(t, "sinkbad", bodies["good-3"]["from_module"])

	// An invalid task-exec.json is a problem; the exit code stands.
	tk, at = only("execbad")
	require.Equal(t, 7, tk.Status)
	require.Equal(t, 7, at.ExitCode)
	require.Equal(t, 7, at.Code)
	ps = problems(at)
	require.Len(t, ps, 1, "%q", ps)
	require.Contains(t, ps[0], "task-exec.json: invalid JSON")

	// A detached child: reported at once, and killed with the group.
	tk, at = only("detached")
	require.Equal(t, 0, tk.Status)
	require.Equal(t, "parent done\n", at.Stdout)
	require.Less(t, at.ReportedAt.Sub(*at.ProgramStart), 3*time.Second, "reported promptly")
	requireGone(t, filepath.Join(pidDir, "detached"))

	// A child holding stdout: its output is kept for the pipe grace, then
	// the group is killed; the slot is not held hostage.
	tk, at = only("holder")
	require.Equal(t, 0, tk.Status)
	require.Contains(t, at.Stdout, "parent done\n")
	require.Contains(t, at.Stdout, "child says hi\n")
	require.Less(t, at.ProgramEnd.Sub(*at.ProgramStart), 3*time.Second, "the program itself ended at once")
	require.Less(t, at.ReportedAt.Sub(*at.ProgramStart), 9*time.Second, "reported after the pipe grace at most")
	requireGone(t, filepath.Join(pidDir, "holder"))

	// A child that left the group holding stdout: same bound.
	tk, at = only("escaper")
	require.Equal(t, 0, tk.Status)
	require.Contains(t, at.Stdout, "parent done\n")
	require.Less(t, at.ReportedAt.Sub(*at.ProgramStart), 9*time.Second, "reported after the pipe grace at most")

	// A program that ignores SIGTERM past task_max_seconds: SIGKILL after
	// the grace, status 124.
	tk, at = only("stubborn")
	require.Equal(t, 124, tk.Status)
	require.Equal(t, 124, at.ExitCode)
	require.Equal(t, 124, at.Code)
	require.Equal(t, "app", at.Kind)
	require.Contains(t, at.Reason, "task_max_seconds=1")
	require.Contains(t, at.Stdout, "SIGTERM ignored", "it got SIGTERM first")
	ran := at.ProgramEnd.Sub(*at.ProgramStart)
	require.Greater(t, ran, 1*time.Second+4*time.Second, "SIGKILL only after the grace")
	require.Less(t, ran, 10*time.Second)
}

// requireGone asserts that the process whose pid is in file is not running.
func requireGone(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !processRunning(pid) }, 5*time.Second, 10*time.Millisecond,
		"background child %d killed with the task's group", pid)
}

var cutMarker = regexp.MustCompile(`^\[… (\d+) bytes cut …\]\n`)

// Huge output (50 MB of stdout, 5 MB of stderr, a 20 MB auxout.txt) is
// stored capped at output_text_size, and the pilot never holds it in
// memory. Not parallel: it measures the process's allocations.
func TestFaultHugeOutput(t *testing.T) {
	e := newEnv(t)
	e.script(t, "huge/run.sh", `
head -c 50000000 /dev/zero | tr '\0' x
echo
echo END
head -c 5000000 /dev/zero | tr '\0' y >&2
echo ERR-END >&2
head -c 20000000 /dev/zero | tr '\0' z > "$WORK_DIR/auxout.txt"
echo AUX-END >> "$WORK_DIR/auxout.txt"
`)
	a := e.createApp(t, `
name: huge
modules:
  huge:
    arguments: {code_path: "${DIR}/huge", output_text_size: 10000}
    parameters: {start_task: "x"}
`)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	e.runPilot(t, a.ID, nil)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d MB while running the task", alloc>>20)
	require.Less(t, alloc, uint64(40<<20), "the output streamed through bounded buffers")

	ts := e.tasks(t, a.ID, "huge")
	require.Len(t, ts, 1)
	require.Equal(t, 0, ts[0].Status)
	at := e.attempts(t, ts[0].ID)[0]
	check := func(name, text string, total int, tail string) {
		t.Helper()
		require.LessOrEqual(t, len(text), 10000, name)
		require.Greater(t, len(text), 9000, name)
		m := cutMarker.FindStringSubmatch(text)
		require.NotNil(t, m, "%s starts with the cut marker: %.80q", name, text)
		cut, _ := strconv.Atoi(m[1])
		require.Equal(t, total, cut+len(text)-len(m[0]), "%s: cut + kept = total", name)
		require.True(t, strings.HasSuffix(text, tail), "%s keeps the tail", name)
	}
	check("stdout", at.Stdout, 50000000+1+4, "xxx\nEND\n")
	check("stderr", at.Stderr, 5000000+8, "yyyERR-END\n")
	check("custom text", at.CustomText, 20000000+8, "zzzAUX-END\n")
}

// A pilot started with the user's settings in its environment (here
// SCALEBOX_BROKER, as on a login node) passes the platform's values, and
// the module's own environments over those, to a program it execs
// directly: programs that are not shell scripts read the first of
// duplicate variables (getenv), shells the last.
func TestFaultPilotEnvironmentReachesDirectPrograms(t *testing.T) {
	t.Parallel()
	scaleboxBinary(t)
	e := newEnvWith(t, broker.Config{LeaseTTL: faultTTL})
	a := e.createApp(t, `
name: direct-env
modules:
  direct:
    command: "printenv SCALEBOX_BROKER MY_SETTING PATH"
    environments: [MY_SETTING=module]
    parameters: {start_task: "HOME"}
`)
	p := e.startPilot(t, a.ID, "node-a", nil, "SCALEBOX_BROKER=http://127.0.0.1:1", "MY_SETTING=pilot")
	ts := e.waitTasks(t, a.ID, "direct", 20*time.Second, "the task done", func(ts []api.Task) bool {
		return len(ts) == 1 && ts[0].Status >= 0
	})
	p.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, p.wait(t, 20*time.Second))
	at := e.attempts(t, ts[0].ID)[0]
	// printenv exits 1: the last argument, the headers "{}", names no variable.
	require.Equal(t, 1, at.ExitCode, "%+v", at)
	lines := strings.Split(strings.TrimSpace(at.Stdout), "\n")
	require.Len(t, lines, 4, at.Stdout)
	require.Regexp(t, `^http://127\.0\.0\.1:\d+$`, lines[0])
	require.NotEqual(t, "http://127.0.0.1:1", lines[0], "the pilot's proxy, not the user's broker")
	require.Equal(t, "module", lines[1], "the module's environments win")
	require.True(t, strings.HasPrefix(lines[2], filepath.Dir(scaleboxBinary(t))+":"), "the scalebox binary first on PATH: %s", lines[2])
	require.Equal(t, os.Getenv("HOME"), lines[3])
}
