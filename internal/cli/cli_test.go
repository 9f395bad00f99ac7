package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/internal/cli"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

type cliEnv struct {
	t      *testing.T
	broker string
	dir    string
}

func newCLI(t *testing.T, auth bool) *cliEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "s.db"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close() })
	b := broker.New(st, broker.Config{Auth: auth}, zaptest.NewLogger(t))
	require.NoError(t, b.Start(ctx))
	dir := t.TempDir()
	if auth {
		require.NoError(t, b.BootstrapAdminToken(ctx, filepath.Join(dir, "token")))
	}
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(func() { b.Close(); srv.Close() })
	return &cliEnv{t: t, broker: srv.URL, dir: dir}
}

// run runs the CLI in-process; env vars are set for the call (tests using
// it must not run in parallel with each other's env changes, so they set
// only flags).
func (c *cliEnv) run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	full := append([]string{"--broker", c.broker, "--token-file", filepath.Join(c.dir, "token")}, args...)
	code = cli.Main(context.Background(), full, &out, &errb)
	return code, out.String(), errb.String()
}

func (c *cliEnv) write(name, content string) string {
	p := filepath.Join(c.dir, name)
	require.NoError(c.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(c.t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

const appYAML = `name: cli-test
parameters: {main_router: router}
modules:
  calc:
    parameters: {retry_rules: "['1:3']"}
  router:
    parameters: {start_task: "${START}"}
`

func TestAppLifecycleAndTasks(t *testing.T) {
	c := newCLI(t, true)
	app := c.write("app/app.yaml", appYAML)
	c.write("app/scalebox.env", "START=1000\n")

	code, out, errs := c.run("app", "validate", app)
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, `app "cli-test" is valid: 2 modules (calc, router)`)

	code, out, errs = c.run("--json", "app", "create", app)
	require.Equal(t, 0, code, errs)
	var created map[string]int64
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	id := created["app_id"]
	require.Positive(t, id)

	appID := "--app-id=" + itoa(id)
	code, out, errs = c.run("task", "add", appID, "--sink-module", "calc", "-h", "len=100", "-H", "x=1", "000000001_000000100")
	require.Equal(t, 0, code, errs)
	require.Regexp(t, `^\{"task_id":\d+\}\n$`, out)

	tf := c.write("tasks.txt", "calc,a\ncalc,b,{\"k\":\"v\"}\nrouter,r1\ncalc,a\n")
	code, out, errs = c.run("task", "add", appID, "--task-file", tf)
	require.Equal(t, 0, code, errs)
	require.Equal(t, "{\"num_tasks\":3}\n", out)
	require.Contains(t, errs, "1 duplicate task(s) ignored")

	code, out, _ = c.run("task", "list", appID, "--module", "calc")
	require.Equal(t, 0, code)
	require.Contains(t, out, "000000001_000000100")
	require.Equal(t, 3, strings.Count(out, "READY"))

	code, out, _ = c.run("--json", "task", "list", appID, "--module", "calc", "--limit", "1", "--all")
	require.Equal(t, 0, code)
	var list struct{ Tasks []map[string]any }
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Len(t, list.Tasks, 3)
	require.Equal(t, map[string]any{"len": "100", "x": "1"}, list.Tasks[0]["headers"])

	code, out, _ = c.run("app", "show", itoa(id))
	require.Equal(t, 0, code)
	require.Contains(t, out, "READY=3")
	require.Contains(t, out, "READY=2", "start task + r1")

	code, out, _ = c.run("app", "pause", itoa(id))
	require.Equal(t, 0, code)
	require.Contains(t, out, "PAUSED")
	code, _, _ = c.run("app", "set-finished", appID, "Result is 168")
	require.Equal(t, 0, code)
	code, _, errs = c.run("app", "resume", itoa(id))
	require.Equal(t, cli.ExitConflict, code, errs)
	code, out, _ = c.run("app", "list")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Result is 168")
}

func TestSemaphoresAndVariables(t *testing.T) {
	c := newCLI(t, true)
	app := c.write("app.yaml", strings.ReplaceAll(appYAML, "${START}", "1"))
	code, out, errs := c.run("--json", "app", "create", app)
	require.Equal(t, 0, code, errs)
	var created map[string]int64
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	appID := "--app-id=" + itoa(created["app_id"])

	code, _, _ = c.run("semaphore", "create", appID, "s1", "5")
	require.Equal(t, 0, code)
	code, _, _ = c.run("semaphore", "create", appID, `{"semaphores":{"s2":1,"t1":7}}`)
	require.Equal(t, 0, code)
	code, out, _ = c.run("semaphore", "increment-n", appID, "s1", "10")
	require.Equal(t, 0, code)
	require.Equal(t, "15\n", out)
	code, out, _ = c.run("semaphore", "decrement", appID, "s2")
	require.Equal(t, 0, code)
	require.Equal(t, "0\n", out)
	code, out, _ = c.run("semaphore", "get", appID, "s1")
	require.Equal(t, 0, code)
	require.Equal(t, "15\n", out)
	code, _, _ = c.run("semaphore", "get", appID, "nope")
	require.Equal(t, cli.ExitNotFound, code)
	code, out, _ = c.run("semaphore", "list", appID, "s")
	require.Equal(t, 0, code)
	require.Contains(t, out, "s1")
	require.NotContains(t, out, "t1")
	code, _, _ = c.run("semaphore", "create", appID, "s1", "x")
	require.Equal(t, cli.ExitInvalid, code)

	code, _, _ = c.run("variable", "set", appID, "target", "/data/out dir")
	require.Equal(t, 0, code)
	code, out, _ = c.run("variable", "get", appID, "target")
	require.Equal(t, 0, code)
	require.Equal(t, "/data/out dir\n", out)
	code, _, _ = c.run("variable", "get", appID, "missing")
	require.Equal(t, cli.ExitNotFound, code)
}

func TestErrorsAndExitCodes(t *testing.T) {
	c := newCLI(t, true)
	bad := c.write("bad.yaml", "name: x\nmodules:\n  a:\n    sink_modules: [nowhere]\n    bogus_key: 1\n")
	code, _, errs := c.run("app", "validate", bad)
	require.Equal(t, cli.ExitInvalid, code)
	require.Contains(t, errs, "bad.yaml:4")
	require.Contains(t, errs, "nowhere")
	require.Contains(t, errs, "bogus_key")

	code, _, errs = c.run("app", "create", filepath.Join(c.dir, "missing.yaml"))
	require.Equal(t, cli.ExitInvalid, code, errs)

	code, _, _ = c.run("app", "show", "999")
	require.Equal(t, cli.ExitNotFound, code)
	code, _, _ = c.run("task", "add", "body")
	require.Equal(t, cli.ExitInvalid, code, "no app id")
	code, _, _ = c.run("no-such-command")
	require.Equal(t, cli.ExitInvalid, code)

	// A wrong token is refused with its own exit code.
	var out, errb bytes.Buffer
	code = cli.Main(context.Background(), []string{"--broker", c.broker, "--token", "wrong", "app", "list"}, &out, &errb)
	require.Equal(t, cli.ExitUnauthorized, code, errb.String())

	// An unreachable broker is a plain error.
	code = cli.Main(context.Background(), []string{"--broker", "http://127.0.0.1:1", "--token", "x", "app", "list"}, &out, &errb)
	require.Equal(t, cli.ExitError, code)
}

func TestSitesAndPilotScript(t *testing.T) {
	c := newCLI(t, true)
	code, out, errs := c.run("site", "put", "../../examples/sites/hpc-slurm.yaml")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, "site hpc-slurm (slurm) registered")
	code, _, errs = c.run("site", "put", "../../examples/sites/hpc-pbs.yaml")
	require.Equal(t, 0, code, errs)
	code, out, _ = c.run("site", "list")
	require.Equal(t, 0, code)
	require.Contains(t, out, "hpc-pbs")
	require.Contains(t, out, "workq")
	code, out, _ = c.run("pilot", "script", "--site", "hpc-pbs", "--app-id", "4", "--count", "3")
	require.Equal(t, 0, code)
	require.Contains(t, out, "#PBS -J 0-2")
	require.Contains(t, out, "--app-id")
	bad := c.write("bad-site.yaml", "name: x\nkind: slurm\nbroker: http://b\npilot:\n  corez: 3\n")
	code, _, errs = c.run("site", "put", bad)
	require.Equal(t, cli.ExitInvalid, code)
	require.Contains(t, errs, "bad-site.yaml:4")
	code, _, _ = c.run("site", "show", "nope")
	require.Equal(t, cli.ExitNotFound, code)
}

func TestPilotExplainBinds(t *testing.T) {
	c := newCLI(t, true)
	c.write("app/code/run.sh", "#!/bin/sh\n")
	data := filepath.Join(c.dir, "data")
	require.NoError(t, os.MkdirAll(data, 0o755))
	app := c.write("app/app.yaml", `name: boxed
modules:
  calc:
    base_image: /images/calc.sif
    arguments: {code_path: "`+filepath.Join(c.dir, "app", "code")+`"}
    volumes: ["`+data+`:/data:ro"]
  router:
    arguments: {code_path: code}
`)
	code, out, errs := c.run("--json", "app", "create", app)
	require.Equal(t, 0, code, errs)
	var created map[string]int64
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	appID := "--app-id=" + itoa(created["app_id"])

	code, out, errs = c.run("pilot", "explain-binds", appID, "--container-engine", "apptainer", "--scratch", "/scratch")
	require.Equal(t, 0, code, errs)
	require.Contains(t, out, `module calc (image "/images/calc.sif", engine apptainer, mode slot):`)
	require.NotContains(t, out, "module router", "a module without an image runs on the host")
	require.Regexp(t, `(?m)^TARGET\s+SOURCE\s+MODE\s+WHY$`, out)
	require.Regexp(t, `(?m)^/work\s+/scratch/scalebox/pilot-<id>/slot-calc-<n>\s+rw\s+work dir \(WORK_DIR\)$`, out)
	require.Regexp(t, `(?m)^/local_data_root\s+/scratch/scalebox/data/app-\d+\s+rw`, out)
	require.Regexp(t, `(?m)^/app/bin\s+`+regexp.QuoteMeta(filepath.Join(c.dir, "app", "code"))+`\s+ro\s+arguments.code_path$`, out)
	require.Regexp(t, `(?m)^/data\s+`+regexp.QuoteMeta(data)+`\s+ro\s+volumes\[0\]$`, out)

	// A missing volume source is reported with the module, exit code 3.
	require.NoError(t, os.RemoveAll(data))
	code, _, errs = c.run("pilot", "explain-binds", appID, "--module", "calc")
	require.Equal(t, cli.ExitInvalid, code)
	require.Contains(t, errs, "module calc")
	require.Contains(t, errs, data)
}

func TestTaskActivate(t *testing.T) {
	c := newCLI(t, true)
	app := c.write("init/app.yaml", `name: init
modules:
  m:
    parameters: {initial_task_status: INITIAL, start_task: [a, b, c]}
`)
	code, out, errs := c.run("--json", "app", "create", app)
	require.Equal(t, 0, code, errs)
	var created map[string]int64
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	appID := "--app-id=" + itoa(created["app_id"])
	code, out, errs = c.run("task", "activate", appID, "--module", "m", "--limit", "2")
	require.Equal(t, 0, code, errs)
	require.Equal(t, "2 task(s) activated\n", out)
	code, out, _ = c.run("task", "list", appID, "--status", "INITIAL")
	require.Equal(t, 0, code)
	require.Equal(t, 1, strings.Count(out, "INITIAL"), out)
	code, _, errs = c.run("task", "activate", appID, "--module", "nope")
	require.Equal(t, cli.ExitNotFound, code, errs)
}
