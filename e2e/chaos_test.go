package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
)

// The chaos test runs a three-stage pipeline (a → b → c, each task of a
// and b emitting one message downstream) of SCALEBOX_CHAOS_TASKS tasks per
// stage through a real broker process on SQLite and three real pilot
// processes, while it kills the broker (SIGKILL) and restarts it on the
// same database, kills pilots and starts new ones, and stops a pilot
// (SIGSTOP) until the broker declares it lost. Afterwards every task of
// every stage is OK, with exactly one successful attempt, the bodies of
// the last stage add up, and the infrastructure retries are reported.

const chaosTTL = 3 * time.Second

type chaos struct {
	t       *testing.T
	dir     string
	db      string
	addr    string
	url     string
	client  *api.Client
	broker  *proc
	pilots  []*proc
	appID   int64
	nPilots int
}

// proc is a process of the test: the broker or a pilot.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.Buffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name string, env []string, argv ...string) *proc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	p := &proc{name: name, cmd: cmd, out: &testenv.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start())
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func (c *chaos) startBroker() {
	t := c.t
	c.broker = startProc(t, "broker", nil, testenv.ScaleboxBroker(t),
		"--db", c.db, "--listen", c.addr, "--no-auth", "--lease-ttl", chaosTTL.String(), "--infra-retries", "100",
		"--no-provision", "--token-file", filepath.Join(c.dir, "token"), "--log-level", "warn")
	ok := assertEventually(func() bool {
		select {
		case <-c.broker.done:
			t.Fatalf("broker exited: %v\n%s", c.broker.err, c.broker.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.client.Healthz(ctx) == nil
	}, 30*time.Second, 20*time.Millisecond)
	require.True(t, ok, "broker did not answer:\n%s", c.broker.out.String())
}

func (c *chaos) startPilot() *proc {
	t := c.t
	c.nPilots++
	name := fmt.Sprintf("pilot-%d", c.nPilots)
	p := startProc(t, name, []string{"SCALEBOX_TOKEN=", "SCALEBOX_TOKEN_FILE=" + filepath.Join(c.dir, "no-token"),
		"GORACE=halt_on_error=1 atexit_sleep_ms=0"},
		scaleboxBinary(t), "--broker", c.url, "pilot", "run", "--app-id", strconv.FormatInt(c.appID, 10),
		"--slots", "a:2,b:2,c:2", "--grace", "2s", "--host", name, "--scratch", filepath.Join(c.dir, name), "--log-level", "info")
	c.pilots = append(c.pilots, p)
	return p
}

// ok is the number of tasks of the app in status OK (0 when the broker is
// down).
func (c *chaos) ok() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a, err := c.client.AppGet(ctx, c.appID)
	if err != nil {
		return 0
	}
	var n int64
	for _, m := range a.Modules {
		n += m.Counts["OK"]
	}
	return n
}

// hasPilot reports whether the broker lists a pilot on host with status.
func (c *chaos) hasPilot(host, status string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ps, err := c.client.PilotList(ctx)
	if err != nil {
		return false
	}
	for _, p := range ps {
		if p.Host == host && p.Status == status {
			return true
		}
	}
	return false
}

// stuck describes the tasks that are not OK, and the pilots' logs.
func (c *chaos) stuck() string {
	ctx := context.Background()
	out := ""
	for _, m := range []string{"a", "b", "c"} {
		for after := int64(0); ; {
			l, err := c.client.TaskList(ctx, api.TaskListParams{AppID: c.appID, Module: m, After: after, Limit: 1000})
			if err != nil {
				return out + "\n" + err.Error()
			}
			for _, task := range l.Tasks {
				if task.Status == api.StatusOK {
					continue
				}
				out += fmt.Sprintf("\ntask %d %s %q: %s pilot %d lease %v", task.ID, m, task.Body, task.StatusName, task.PilotID, task.LeaseExpires)
				if d, err := c.client.TaskGet(ctx, task.ID); err == nil {
					for _, at := range d.Attempts {
						out += fmt.Sprintf("\n  attempt %d %s pilot %d host %s code %d: %s", at.Attempt, at.Kind, at.PilotID, at.Host, at.Code, at.Reason)
					}
				}
			}
			if len(l.Tasks) < 1000 {
				break
			}
			after = l.Tasks[len(l.Tasks)-1].ID
		}
	}
	if ps, err := c.client.PilotList(ctx); err == nil {
		for _, p := range ps {
			out += fmt.Sprintf("\npilot %d %s %s", p.ID, p.Host, p.Status)
		}
	}
	for _, p := range c.pilots {
		out += fmt.Sprintf("\n--- %s:\n%s", p.name, p.out.String())
	}
	return out
}

func TestChaosPipelineExactlyOnce(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { runChaos(t, "") })
	t.Run("postgres", func(t *testing.T) { runChaos(t, pgtest.DSN(t)) })
}

// runChaos runs the chaos pipeline on SQLite (dsn "") or on the PostgreSQL
// database dsn, which it also restarts once.
func runChaos(t *testing.T, dsn string) {
	n := 1500
	if v, err := strconv.Atoi(os.Getenv("SCALEBOX_CHAOS_TASKS")); err == nil && v > 0 {
		n = v
	}
	dir, err := os.MkdirTemp("", "sbchaos-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if !t.Failed() {
			_ = os.RemoveAll(dir)
		}
	})
	c := &chaos{t: t, dir: dir, db: filepath.Join(dir, "s.db"), addr: freeAddr(t)}
	if dsn != "" {
		c.db = dsn
	}
	c.url = "http://" + c.addr
	c.client = api.NewClient(c.url, "")
	c.startBroker()

	code := filepath.Join(dir, "code")
	for m, next := range map[string]string{"a": "b", "b": "c", "c": ""} {
		script := "#!/bin/bash\nset -e\n"
		if next != "" {
			script += fmt.Sprintf("echo \"%s,$1\" >> \"$WORK_DIR/sink-tasks.txt\"\n", next)
		}
		require.NoError(t, os.MkdirAll(filepath.Join(code, m), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(code, m, "run.sh"), []byte(script), 0o755))
	}
	yml := fmt.Sprintf(`name: chaos
modules:
  a: {arguments: {code_path: %[1]s/a}, sink_modules: [b]}
  b: {arguments: {code_path: %[1]s/b}, sink_modules: [c]}
  c: {arguments: {code_path: %[1]s/c}}
`, code)
	ctx := context.Background()
	a, err := c.client.AppCreate(ctx, &api.AppCreateRequest{YAML: yml, Filename: "app.yaml"})
	require.NoError(t, err)
	c.appID = a.ID
	tasks := make([]api.TaskInput, n)
	for i := range tasks {
		tasks[i] = api.TaskInput{Body: strconv.Itoa(i + 1)}
	}
	_, err = c.client.TaskAdd(ctx, a.ID, &api.TaskAddRequest{Module: "a", Tasks: tasks})
	require.NoError(t, err)
	for range 3 {
		c.startPilot()
	}

	total := int64(3 * n)
	at := func(frac float64) {
		if !assertEventually(func() bool { return c.ok() >= int64(frac*float64(total)) }, 2*time.Minute, 20*time.Millisecond) {
			t.Fatalf("no progress to %.0f%%: %d of %d OK%s", frac*100, c.ok(), total, c.stuck())
		}
	}
	restartBroker := func() {
		c.broker.kill()
		c.startBroker()
	}
	at(0.10)
	restartBroker()
	at(0.25)
	c.pilots[0].kill()
	c.startPilot()
	at(0.40)
	// A pilot stopped past its lease: the broker declares it lost and
	// requeues its tasks; woken up, its stale results are fenced.
	stopped := c.pilots[1]
	require.NoError(t, stopped.cmd.Process.Signal(syscall.SIGSTOP))
	require.True(t, assertEventually(func() bool { return c.hasPilot("pilot-2", "LOST") }, time.Minute, 50*time.Millisecond),
		"the stopped pilot was not declared lost")
	require.NoError(t, stopped.cmd.Process.Signal(syscall.SIGCONT))
	// Woken, it finds itself lost, stops what it ran and registers again.
	require.True(t, assertEventually(func() bool { return c.hasPilot("pilot-2", "ACTIVE") }, time.Minute, 50*time.Millisecond),
		"the stopped pilot did not re-attach:\n%s", stopped.out.String())
	at(0.50)
	dbRestarts := 0
	if dsn != "" {
		pgtest.Restart(t) // the broker keeps running without its database for a moment
		dbRestarts++
	}
	at(0.55)
	restartBroker()
	at(0.70)
	c.pilots[2].kill()
	c.startPilot()
	at(0.85)
	restartBroker()
	at(1)

	// Every task OK exactly once; the last stage adds up; report the cost.
	var infra, fenced, sum int64
	for _, m := range []string{"a", "b", "c"} {
		var list []api.Task
		after := int64(0)
		for {
			l, err := c.client.TaskList(ctx, api.TaskListParams{AppID: a.ID, Module: m, After: after, Limit: 1000})
			require.NoError(t, err)
			list = append(list, l.Tasks...)
			if len(l.Tasks) < 1000 {
				break
			}
			after = l.Tasks[len(l.Tasks)-1].ID
		}
		require.Len(t, list, n, "module %s", m)
		for _, task := range list {
			require.Equal(t, api.StatusOK, task.Status, "task %d (%s %s)", task.ID, m, task.Body)
			d, err := c.client.TaskGet(ctx, task.ID)
			require.NoError(t, err)
			okAttempts := 0
			for _, at := range d.Attempts {
				switch {
				case at.Kind == "fenced":
					fenced++
				case at.Kind == "infra":
					infra++
				case at.Code == 0:
					okAttempts++
				}
			}
			require.Equal(t, 1, okAttempts, "task %d (%s %s) attempts %+v", task.ID, m, task.Body, d.Attempts)
			if m == "c" {
				v, err := strconv.ParseInt(task.Body, 10, 64)
				require.NoError(t, err)
				sum += v
			}
		}
	}
	require.Equal(t, int64(n)*int64(n+1)/2, sum)
	t.Logf("chaos: %d tasks per stage, 3 broker kills, 2 pilot kills, 1 pilot stopped past its lease, %d database restarts: %d infra attempts, %d fenced results",
		n, dbRestarts, infra, fenced)
}
