package pilot_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/pilot"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

type env struct {
	ctx    context.Context
	client *api.Client
	url    string
	dir    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, broker.Config{})
}

// newEnvWith starts a broker with cfg on a fresh SQLite store, over HTTP.
func newEnvWith(t *testing.T, cfg broker.Config) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	b := broker.New(st, cfg, zaptest.NewLogger(t).Named("broker"))
	require.NoError(t, b.Start(ctx))
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(func() { b.Close(); srv.Close() })
	return &env{ctx: ctx, client: api.NewClient(srv.URL, ""), url: srv.URL, dir: t.TempDir()}
}

// script writes an executable bash script.
func (e *env) script(t *testing.T, rel, body string) string {
	t.Helper()
	p := filepath.Join(e.dir, rel)
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, []byte("#!/bin/bash\n"+body), 0o755))
	return p
}

func (e *env) createApp(t *testing.T, yml string) *api.App {
	t.Helper()
	a, err := e.client.AppCreate(e.ctx, &api.AppCreateRequest{YAML: yml, Vars: map[string]string{"DIR": e.dir}})
	require.NoError(t, err)
	return a
}

// runPilot runs a pilot until the app has nothing left to run.
func (e *env) runPilot(t *testing.T, appID int64, slots map[string]int) *pilot.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 60*time.Second)
	defer cancel()
	done := make(chan *pilot.Stats, 1)
	pctx, stop := context.WithCancel(ctx)
	go func() {
		st, err := pilot.Run(pctx, pilot.Config{Broker: e.url, AppID: appID, Slots: slots, Host: "node-a",
			Scratch: filepath.Join(e.dir, "scratch"), Grace: 5 * time.Second, Log: zaptest.NewLogger(t).Named("pilot")})
		if err != nil {
			t.Errorf("pilot: %v", err)
		}
		done <- st
	}()
	require.Eventually(t, func() bool {
		a, err := e.client.AppGet(ctx, appID)
		if err != nil {
			return false
		}
		for _, m := range a.Modules {
			if m.Counts["READY"]+m.Counts["QUEUED"]+m.Counts["RUNNING"]+m.Counts["RETRY_WAIT"] > 0 {
				return false
			}
		}
		return true
	}, 50*time.Second, 5*time.Millisecond)
	stop()
	return <-done
}

func (e *env) tasks(t *testing.T, appID int64, module string) []api.Task {
	t.Helper()
	l, err := e.client.TaskList(e.ctx, api.TaskListParams{AppID: appID, Module: module, Limit: 1000})
	require.NoError(t, err)
	return l.Tasks
}

func TestPipelineWithSinkTasksAndContract(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.script(t, "gen/run.sh", `
set -e
[ "$1" = "start body; \$(rm -rf /) 'x'" ] || { echo "body mangled: $1" >&2; exit 9; }
echo "gen got $2"
for i in 1 2 3 4 5; do echo "work,item-$i,{\"n\":\"$i\"}" >> "$WORK_DIR/sink-tasks.txt"; done
echo "$APP_ID $MODULE_NAME $SINK_MODULE $HOST_NAME" > "$WORK_DIR/auxout.txt"
`)
	e.script(t, "work/run.sh", `
n=$(echo "$2" | sed -E 's/.*"n":"([0-9]+)".*/\1/')
[ "$FROM_MODULE" = gen ] || exit 8
echo "from_host=$FROM_HOST" >&2
date --iso-8601=ns | sed 's/,/./' > "$WORK_DIR/timestamps.txt"
[ "$n" = 3 ] && exit 3
echo '{"statusCode":0,"inputBytes":1000}' > "$WORK_DIR/task-exec.json"
`)
	a := e.createApp(t, `
name: contract
modules:
  gen:
    arguments: {code_path: "${DIR}/gen"}
    sink_modules: [work]
    parameters: {start_task: "start body; $(rm -rf /) 'x'"}
  work:
    arguments: {code_path: "${DIR}/work"}
    parameters: {retry_rules: "['3:1']"}
`)
	stats := e.runPilot(t, a.ID, map[string]int{"gen": 1, "work": 2})
	require.EqualValues(t, 5, stats.Succeeded.Load(), "gen + 4 work tasks")
	require.EqualValues(t, 2, stats.Failed.Load(), "item-3 twice (one retry)")

	gen := e.tasks(t, a.ID, "gen")
	require.Len(t, gen, 1)
	d, err := e.client.TaskGet(e.ctx, gen[0].ID)
	require.NoError(t, err)
	require.Equal(t, "OK", d.Task.StatusName, "%+v", d.Attempts)
	at := d.Attempts[0]
	require.Contains(t, at.Stdout, "gen got {}")
	require.Equal(t, "1 gen work node-a\n", at.CustomText)
	require.NotNil(t, at.ProgramStart)
	require.NotNil(t, at.ProgramEnd)
	require.Equal(t, "host", at.Extra["runtime"])

	work := e.tasks(t, a.ID, "work")
	require.Len(t, work, 5)
	for _, w := range work {
		require.Equal(t, "gen", w.Headers["from_module"])
		require.Equal(t, "node-a", w.Headers["from_host"])
		if w.Body == "item-3" {
			require.Equal(t, 3, w.Status)
			require.Equal(t, 2, w.Attempts)
			continue
		}
		require.Equal(t, 0, w.Status, w.Body)
	}
	d, err = e.client.TaskGet(e.ctx, work[0].ID)
	require.NoError(t, err)
	require.EqualValues(t, 1000, d.Attempts[0].InputBytes)
	require.Len(t, d.Attempts[0].UserTimes, 1)
	require.Contains(t, d.Attempts[0].Stderr, "from_host=node-a")

	// The pilot's scratch is gone with it; the app's node-local data dir
	// stays while the app runs.
	entries, _ := filepath.Glob(filepath.Join(e.dir, "scratch", "scalebox", "pilot-*"))
	require.Empty(t, entries)
	require.DirExists(t, filepath.Join(e.dir, "scratch", "scalebox", "data", fmt.Sprintf("app-%d", a.ID)))
}

// TestWorkDirEmptiedBetweenAttempts: a slot's work dir holds nothing of
// the attempt before (files, directories, interface files), only .scalebox.
func TestWorkDirEmptiedBetweenAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.script(t, "gen/run.sh", `for i in 1 2 3 4; do echo "use,item-$i" >> "$WORK_DIR/sink-tasks.txt"; done`)
	e.script(t, "use/run.sh", `
left=$(ls -A "$WORK_DIR" | grep -vx .scalebox | tr '\n' ' ')
mkdir -p "$WORK_DIR/sub-$1/deeper" && touch "$WORK_DIR/f-$1" "$WORK_DIR/sub-$1/deeper/g"
echo "use,again-$1" > "$WORK_DIR/other.txt"
echo "left:$left" > "$WORK_DIR/auxout.txt"
`)
	a := e.createApp(t, `
name: emptied
modules:
  gen:
    arguments: {code_path: "${DIR}/gen"}
    sink_modules: [use]
    parameters: {start_task: "x"}
  use:
    arguments: {code_path: "${DIR}/use"}
`)
	stats := e.runPilot(t, a.ID, map[string]int{"gen": 1, "use": 1})
	require.EqualValues(t, 5, stats.Succeeded.Load())
	for _, u := range e.tasks(t, a.ID, "use") {
		d, err := e.client.TaskGet(e.ctx, u.ID)
		require.NoError(t, err)
		require.Equal(t, "left:\n", d.Attempts[0].CustomText, "task %s found the files of an earlier attempt", u.Body)
	}
}

func TestTimeoutIs124AndKillsTheGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	marker := filepath.Join(e.dir, "late")
	e.script(t, "slow/run.sh", `
(sleep 3; touch `+marker+`) &
for i in $(seq 1 100); do date; sleep 0.1; done
`)
	a := e.createApp(t, `
name: timeout-gen
modules:
  slow:
    arguments: {code_path: "${DIR}/slow"}
    parameters: {start_task: "x", task_max_seconds: 1}
`)
	start := time.Now()
	e.runPilot(t, a.ID, nil)
	tasks := e.tasks(t, a.ID, "slow")
	require.Equal(t, 124, tasks[0].Status)
	require.Equal(t, 1, tasks[0].Attempts, "no retry without a rule")
	require.Less(t, time.Since(start), 20*time.Second)
	d, err := e.client.TaskGet(e.ctx, tasks[0].ID)
	require.NoError(t, err)
	require.GreaterOrEqual(t, strings.Count(d.Attempts[0].Stdout, "\n"), 5)
	_, err = os.Stat(marker)
	require.True(t, os.IsNotExist(err), "the background child was killed with the group")
}

func TestBatchAndMissingProgram(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.script(t, "b/run.sh", `wc -l < "$WORK_DIR/input-messages.txt" > "$WORK_DIR/auxout.txt"`)
	a := e.createApp(t, `
name: batch
modules:
  b:
    arguments: {code_path: "${DIR}/b"}
    parameters: {task_batch_size: 6}
  none:
    arguments: {code_path: "${DIR}/nowhere"}
    parameters: {start_task: "x"}
`)
	var tasks []api.TaskInput
	for _, s := range []string{"000", "001", "002", "003", "004", "005", "006", "007", "008", "009"} {
		tasks = append(tasks, api.TaskInput{Module: "b", Body: s})
	}
	_, err := e.client.TaskAdd(e.ctx, a.ID, &api.TaskAddRequest{Tasks: tasks})
	require.NoError(t, err)
	e.runPilot(t, a.ID, map[string]int{"b": 1, "none": 1})
	for _, tk := range e.tasks(t, a.ID, "b") {
		d, err := e.client.TaskGet(e.ctx, tk.ID)
		require.NoError(t, err)
		require.Equal(t, 0, tk.Status, "%+v", d.Attempts)
	}
	none := e.tasks(t, a.ID, "none")
	require.Equal(t, -110, none[0].Status)
	d, err := e.client.TaskGet(e.ctx, none[0].ID)
	require.NoError(t, err)
	require.Contains(t, d.Attempts[0].Reason, "no program")
}

// The app's node-local data dir outlives attempts and pilots while the app
// runs, and the last pilot to leave after the app ended removes it.
func TestNodeLocalDataDirLivesAsLongAsTheApp(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.script(t, "w/run.sh", `
[ -d "$LOCAL_DATA_ROOT" ] || { echo "no LOCAL_DATA_ROOT: '$LOCAL_DATA_ROOT'" >&2; exit 5; }
echo "$1" >> "$LOCAL_DATA_ROOT/seen.txt"
`)
	a := e.createApp(t, `
name: local-data
modules:
  w:
    arguments: {code_path: "${DIR}/w"}
    parameters: {start_task: [one, two]}
`)
	data := filepath.Join(e.dir, "scratch", "scalebox", "data", fmt.Sprintf("app-%d", a.ID))
	stats := e.runPilot(t, a.ID, map[string]int{"w": 1})
	require.EqualValues(t, 2, stats.Succeeded.Load())
	b, err := os.ReadFile(filepath.Join(data, "seen.txt"))
	require.NoError(t, err, "the data dir stays while the app runs")
	require.ElementsMatch(t, []string{"one", "two"}, strings.Fields(string(b)))

	// Once the app has ended, the next pilot to leave removes it.
	_, err = e.client.AppSetFinished(e.ctx, a.ID, "done")
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	_, err = pilot.Run(ctx, pilot.Config{Broker: e.url, AppID: a.ID, Slots: map[string]int{"w": 1}, Host: "node-a",
		Scratch: filepath.Join(e.dir, "scratch"), MaxIdle: 100 * time.Millisecond, Log: zaptest.NewLogger(t).Named("pilot")})
	require.NoError(t, err)
	require.NoError(t, ctx.Err(), "the pilot retires itself when idle")
	require.NoDirExists(t, data)
}
