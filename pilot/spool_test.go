package pilot_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/pilot"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

// outageEnv is a broker whose HTTP front can be switched off: while down,
// every request gets 503, as from a proxy in front of a dead broker.
type outageEnv struct {
	*env
	down atomic.Bool
}

func newOutageEnv(t *testing.T) *outageEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	b := broker.New(st, broker.Config{}, zaptest.NewLogger(t).Named("broker"))
	require.NoError(t, b.Start(ctx))
	o := &outageEnv{}
	h := b.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.down.Load() {
			http.Error(w, "broker down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { b.Close(); srv.Close() })
	o.env = &env{ctx: ctx, client: api.NewClient(srv.URL, ""), url: srv.URL, dir: t.TempDir()}
	return o
}

// startPilot runs a pilot serving module w until the returned stop is called.
func (o *outageEnv) startPilot(t *testing.T, appID int64) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(o.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := pilot.Run(ctx, pilot.Config{Broker: o.url, AppID: appID, Slots: map[string]int{"w": 1}, Host: "node-a",
			Scratch: filepath.Join(o.dir, "scratch"), Grace: 5 * time.Second, ReportFlush: 200 * time.Millisecond,
			Log: zaptest.NewLogger(t).Named("pilot")})
		if err != nil && !o.down.Load() {
			t.Errorf("pilot: %v", err)
		}
	}()
	return func() { cancel(); <-done }
}

func (o *outageEnv) spooled() []string {
	files, _ := filepath.Glob(filepath.Join(o.dir, "scratch", "scalebox", "spool", "*", "batch-*.json"))
	return files
}

// gatedApp is an app whose task w waits for the file gate, then emits one
// message to module next (which no pilot here serves).
func (o *outageEnv) gatedApp(t *testing.T) (a *api.App, gate string) {
	t.Helper()
	gate = filepath.Join(o.dir, "gate")
	o.script(t, "w/run.sh", `
while [ ! -e "`+gate+`" ]; do sleep 0.02; done
echo "done-$1" > "$WORK_DIR/sink-tasks.txt"
`)
	a = o.createApp(t, `
name: spool
modules:
  w:
    arguments: {code_path: "${DIR}/w"}
    sink_modules: [next]
    parameters: {start_task: "x"}
  next:
    command: /bin/true
`)
	return a, gate
}

// runUntilSpooled starts a pilot, lets its task end while the broker is
// down and waits for the result to reach the spool.
func (o *outageEnv) runUntilSpooled(t *testing.T, appID int64, gate string) (running api.Task, stop func()) {
	t.Helper()
	stop = o.startPilot(t, appID)
	running = o.waitTask(t, appID, "w", "RUNNING")
	o.down.Store(true)
	require.NoError(t, os.WriteFile(gate, nil, 0o644))
	require.Eventually(t, func() bool { return len(o.spooled()) == 1 }, 20*time.Second, 5*time.Millisecond,
		"the result reaches the spool while the broker is down")
	return running, stop
}

func (o *outageEnv) waitTask(t *testing.T, appID int64, module, status string) api.Task {
	t.Helper()
	var last api.Task
	require.Eventually(t, func() bool {
		ts, err := o.client.TaskList(o.ctx, api.TaskListParams{AppID: appID, Module: module, Limit: 10})
		if err != nil || len(ts.Tasks) != 1 {
			return false
		}
		last = ts.Tasks[0]
		return last.StatusName == status
	}, 30*time.Second, 5*time.Millisecond, "task of %s never %s (last %+v)", module, status, last)
	return last
}

// A result that ends while the broker is down goes to the node's disk and
// is delivered when the broker is back, by the same pilot.
func TestSpoolDeliversAfterAnOutage(t *testing.T) {
	t.Parallel()
	o := newOutageEnv(t)
	a, gate := o.gatedApp(t)
	_, stop := o.runUntilSpooled(t, a.ID, gate)
	defer stop()
	o.down.Store(false)
	o.waitTask(t, a.ID, "w", "OK")
	require.Eventually(t, func() bool { return len(o.spooled()) == 0 }, 10*time.Second, 5*time.Millisecond,
		"a delivered batch leaves the spool")
	o.waitTask(t, a.ID, "next", "READY")
}

// A pilot that stops while the broker is down leaves its results on disk;
// the next pilot on the node delivers them under the pilot id they were
// leased to. Delivered again (a pilot died between delivery and removal),
// they are fenced: recorded, nothing emitted twice.
func TestSpoolOutlivesThePilot(t *testing.T) {
	t.Parallel()
	o := newOutageEnv(t)
	a, gate := o.gatedApp(t)
	running, stop := o.runUntilSpooled(t, a.ID, gate)
	stop() // the broker is down: the pilot gives up after ReportFlush
	files := o.spooled()
	require.Len(t, files, 1, "the result outlives its pilot")
	batch, err := os.ReadFile(files[0])
	require.NoError(t, err)

	o.down.Store(false)
	stop = o.startPilot(t, a.ID)
	w := o.waitTask(t, a.ID, "w", "OK")
	require.Eventually(t, func() bool { return len(o.spooled()) == 0 }, 10*time.Second, 5*time.Millisecond)
	stop()
	d, err := o.client.TaskGet(o.ctx, w.ID)
	require.NoError(t, err)
	require.Len(t, d.Attempts, 1)
	require.Equal(t, running.PilotID, d.Attempts[0].PilotID, "applied under the pilot that ran it")
	o.waitTask(t, a.ID, "next", "READY")

	// The same batch once more, as if left behind by a pilot killed right
	// after delivering it.
	again := filepath.Join(o.dir, "scratch", "scalebox", "spool", "pid1-again")
	require.NoError(t, os.MkdirAll(again, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(again, "lock"), nil, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(again, "batch-000000001.json"), batch, 0o600))
	// A file that is not a batch is kept aside, not retried or deleted.
	require.NoError(t, os.WriteFile(filepath.Join(again, "batch-000000002.json"), []byte("{not json"), 0o600))
	stop = o.startPilot(t, a.ID)
	require.Eventually(t, func() bool {
		d, err = o.client.TaskGet(o.ctx, w.ID)
		return err == nil && len(d.Attempts) == 2
	}, 20*time.Second, 5*time.Millisecond)
	stop()
	require.Equal(t, "fenced", d.Attempts[1].Kind)
	require.Equal(t, "OK", d.Task.StatusName)
	next, err := o.client.TaskList(o.ctx, api.TaskListParams{AppID: a.ID, Module: "next", Limit: 10})
	require.NoError(t, err)
	require.Len(t, next.Tasks, 1, "no message emitted twice")
	require.FileExists(t, filepath.Join(again, "batch-000000002.json.bad"))
}
