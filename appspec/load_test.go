package appspec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/schema"
)

func TestLoadAppPrimes(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "app-primes")
	require.Equal(t, "app-primes-g10-python", app.Name)
	require.Equal(t, "local", app.Cluster)
	require.Equal(t, "RUNNING", app.InitialStatus)
	require.Equal(t, "mr-module", app.MainRouter)
	require.Equal(t, []string{"my-module", "mr-module"}, moduleNames(app))

	calc := app.Module("my-module")
	require.Equal(t, "app-primes/calc:python", calc.BaseImage)
	require.Equal(t, "local", calc.Cluster, "module inherits the app cluster")
	require.Equal(t, "DEFAULT", calc.TaskDistMode, "TASK_DIST_MODE= means default")
	require.Equal(t, map[string]string{"task_dist_mode": ""}, calc.Parameters)
	require.Equal(t, []string{"h0:1"}, calc.Slots)
	require.Equal(t, 1, calc.TaskBatchSize)
	require.Equal(t, 2.0, calc.TaskGlobalTimeoutScale)
	require.Equal(t, 65535, calc.OutputTextSize)
	require.Equal(t, "HEAD", calc.TextTruncMode)
	require.Equal(t, "READY", calc.InitialTaskStatus)
	require.False(t, calc.SlotOnHead())

	mr := app.Module("mr-module")
	require.Equal(t, "/work/apps/app-primes/mr-code", mr.CodePath)
	require.Equal(t, []string{"NUM_GROUPS=10"}, mr.Environments)
	require.True(t, mr.SlotOnHead())
	require.Nil(t, app.Module("nope"))

	inline := loadTestdata(t, "app-primes", "inline.env")
	require.Equal(t, "inline", inline.Cluster)
	calc = inline.Module("my-module")
	require.Equal(t, "HOST-BOUND", calc.TaskDistMode)
	require.Equal(t, []string{"n-[01][01]:4"}, calc.Slots)
}

func TestLoadRetryTest(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "retry_test")
	m := app.Module("retry_test")
	require.NotNil(t, m)
	require.Equal(t, []string{"0"}, m.StartTasks)
	require.Equal(t, "0", m.Parameters["start_task"])
	require.Equal(t, []string{"retry_test"}, m.SinkModules, "self-loop allowed")
	require.Equal(t, 3, m.RetryRules.MaxRetries(1))
	require.Equal(t, 2, m.RetryRules.MaxRetries(2))
	require.Equal(t, 1, m.RetryRules.MaxRetries(3))
	require.Equal(t, 0, m.RetryRules.MaxRetries(0))
	require.Equal(t, "/work/apps/retry_test/code", m.CodePath)
	require.True(t, m.SlotOnHead())
}

func TestLoadHelloScaleboxGen1(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "hello-scalebox")
	require.Equal(t, "local", app.Cluster)
	m := app.Module("hello-scalebox")
	require.Equal(t, "hub.cstcloud.cn/scalebox/agent", m.BaseImage)
	require.Equal(t, []string{"scalebox"}, m.StartTasks)
	require.Equal(t, "reserved_on_exit,slot_on_head", m.Arguments["slot_options"])
	require.True(t, m.SlotOnHead())
}

func TestLoadVTask(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "vtask")
	require.Equal(t, []string{"wait-queue", "vtask-head", "vtask-core", "vtask-tail", "main-router"}, moduleNames(app))
	head := app.Module("vtask-head")
	require.Equal(t, "DEFAULT", head.TaskDistMode)
	require.Equal(t, []string{"h0"}, head.Slots)
	require.Equal(t, "2", head.Parameters["vtask_size"])
	require.Equal(t, "yes", head.Parameters["vtask_size_sema_copy"])
	require.Equal(t, "/work/apps/vtask/modules/vtask-core/code", app.Module("vtask-core").CodePath)

	sb := loadTestdata(t, "vtask", "slot-bound.env")
	require.Equal(t, "SLOT-BOUND", sb.Module("vtask-head").TaskDistMode)
	require.Equal(t, []string{"h0:2"}, sb.Module("vtask-head").Slots)
	require.Equal(t, "HOST-BOUND", sb.Module("vtask-core").TaskDistMode)
	require.Equal(t, []string{"n[01]-[01]"}, sb.Module("vtask-core").Slots)
}

func TestLoadClusterDirCopyGen1(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "cluster-dir-copy")
	require.Equal(t, "message-router", app.MainRouter)
	require.Equal(t, map[string]string{"initial_status": "RUNNING", "main_router": "message-router"}, app.Parameters)
	list := app.Module("cluster-dir-list")
	require.Equal(t, map[string]string{"max_idle_polls": "120"}, list.Arguments)
	require.Equal(t, "HEAD", list.Parameters["schedule_mode"])
	require.True(t, list.SlotOnHead())
	require.False(t, app.Module("data-grouping").SlotOnHead())
	mr := app.Module("message-router")
	require.Equal(t, []string{"~fits-fz#Dec+6007_09_03~qiu"}, mr.StartTasks)
	require.Equal(t, []string{"cluster-dir-list", "data-grouping", "cluster-file-copy"}, mr.SinkModules)
}

func TestLoadAppCopyGen1(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "app-copy")
	require.Equal(t, "app-copy.rsync", app.Name)
	fc := app.Module("file-copy")
	require.Equal(t, "hub.cstcloud.cn/scalebox/rsync-copy", fc.BaseImage)
	require.Equal(t, []string{"h0:4"}, fc.Slots, "scalar hosts: becomes a one-entry list")
	require.Equal(t, 600, fc.TaskMaxSeconds)
	require.Equal(t, "600", fc.Arguments["task_max_seconds"])
	require.Equal(t, 1, fc.TaskBatchSize, "BULK= means default")
	require.Equal(t, "", fc.Parameters["task_batch_size"])
	require.Equal(t, 2, fc.RetryRules.MaxRetries(14))
	require.Equal(t, 2, fc.RetryRules.MaxRetries(15))
	require.Equal(t, 0, fc.RetryRules.MaxRetries(1))
	require.Equal(t, "^([0-9]+)/", fc.KeyGroupRegex)
	require.Equal(t, []string{"/:/local"}, fc.Volumes)
	require.Equal(t, []string{"SOURCE_URL=/data/src", "TARGET_URL=scalebox@10.255.128.1/tmp", "RAM_DISK_GB="}, fc.Environments)
	ld := app.Module("list-dir")
	require.Equal(t, "yes", ld.Arguments["always_running"])
	require.Equal(t, []string{"/:/local:ro"}, ld.Volumes)
	require.Equal(t, []string{"."}, ld.StartTasks)
}

func TestLoadBeamFormSlurm(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "beam-form")
	require.Equal(t, "mr-beam-form", app.MainRouter)
	require.Equal(t, "3", app.Parameters["global_copier_size"])
	require.Equal(t, `{"pull-unpack":1,"beam-make":4}`, app.Parameters["slot_group"])

	var defs map[string]map[string]any
	require.NoError(t, json.Unmarshal(app.ClusterDefs, &defs))
	require.Contains(t, defs, "vcluster")
	backend := defs["vcluster"]["backend_config"].(map[string]any)
	require.Equal(t, "3", backend["num_groups"], "variables are expanded inside raw blocks too")
	require.Equal(t, "slurm", backend["type"])

	bm := app.Module("beam-make")
	require.Equal(t, "p419-slurm", bm.Site)
	require.Equal(t, Resources{Cores: 8, MemoryMB: 32 * 1024, GPUs: 1, ExpectedSeconds: 1200}, bm.Resources)
	require.Equal(t, 1200, bm.TaskMaxSeconds)
	require.Equal(t, 30, bm.TaskMinSeconds)
	require.Equal(t, "60", bm.Arguments["poll_interval_seconds"])
	require.Equal(t, "1", bm.Parameters["router_index"])
	require.Equal(t, "65", bm.Parameters["task_dedup_cache_ttl_minutes"])
	require.Equal(t, 9, bm.RetryRules.MaxRetries(134))
	require.Equal(t, 3, bm.RetryRules.MaxRetries(1))
	require.Equal(t, []string{"d0[0-2][0-9]:4", "d00[0-3]:2:d00"}, bm.Slots)
	require.Contains(t, bm.Command, "((@seq))")

	pu := app.Module("pull-unpack")
	require.Equal(t, `{"/tmp/scalebox/mydata/mwa/dat":15}`, pu.Arguments["free_space_gb"])
	require.JSONEq(t, `{"/public/home/u1/scalebox":440,"/public/home/u2/scalebox":440}`, pu.Arguments["dir_quota_gb"])
	require.Equal(t, "2", pu.Parameters["router_index"])
	require.Equal(t, "by_channel", pu.PodID)

	require.Equal(t, 2, app.Module("mr-beam-form").TaskBatchSize)
	require.Equal(t, []string{"1257010784/p00001_00024"}, app.Module("mr-beam-form").StartTasks)
	require.Equal(t, []string{"h0:3"}, app.Module("vtask-head").Slots)
}

func TestLoadStartTaskFile(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "start-file")
	w := app.Module("worker")
	require.Equal(t, []string{"000", "001", "002"}, w.StartTasks)
	abs, err := filepath.Abs(filepath.Join("testdata", "start-file", "code"))
	require.NoError(t, err)
	require.Equal(t, abs, w.CodePath)
	require.Equal(t, "code", w.Arguments["code_path"], "raw argument is kept")

	// Parse knows no directory: FILE: and relative paths stay as written.
	data, err := os.ReadFile(filepath.Join("testdata", "start-file", "app.yaml"))
	require.NoError(t, err)
	app = parseOK(t, string(data), nil)
	require.Equal(t, []string{"FILE:tasks.txt"}, app.Module("worker").StartTasks)
	require.Equal(t, "code", app.Module("worker").CodePath)
}

func TestLoadStartTaskFileMissing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.yaml")
	require.NoError(t, os.WriteFile(path, []byte("modules:\n  m:\n    parameters:\n      start_task: FILE:nope.txt\n"), 0o644))
	_, err := Load(path, Options{Environ: []string{}})
	require.Error(t, err)
	require.Contains(t, err.Error(), path+":4:19: modules.m.parameters.start_task: read start tasks:")
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), Options{})
	require.ErrorIs(t, err, os.ErrNotExist)

	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app.yaml"), []byte("modules: {m: {}}\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "scalebox.env"), []byte("A=1\nnot a line\n"), 0o644))
	_, err = Load(filepath.Join(dir, "app.yaml"), Options{Environ: []string{}})
	require.ErrorContains(t, err, filepath.Join(dir, "scalebox.env")+":2: expected KEY=VALUE")

	_, err = Load(filepath.Join("testdata", "app-primes", "app.yaml"), Options{EnvFiles: []string{"testdata/none.env"}, Environ: []string{}})
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestEnvPriority checks scalebox.env < --env-file (in order) < process env.
func TestEnvPriority(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	app := write("app.yaml", `
modules:
  m:
    environments: [A=${A}, B=${B}, C=${C}, D=${D}]
`)
	write("scalebox.env", "A=env\nB=env\nC=env\nD=env\n")
	e1 := write("e1.env", "B=e1\nC=e1\nD=e1\n")
	e2 := write("e2.env", "C=e2\nD=e2\n")
	got, err := Load(app, Options{EnvFiles: []string{e1, e2}, Environ: []string{"D=proc", "IGNORED", "=x"}})
	require.NoError(t, err)
	require.Equal(t, []string{"A=env", "B=e1", "C=e2", "D=proc"}, got.Module("m").Environments)

	// Without scalebox.env the env files and process env still apply.
	require.NoError(t, os.Remove(filepath.Join(dir, "scalebox.env")))
	_, err = Load(app, Options{EnvFiles: []string{e2}, Environ: []string{"B=p"}})
	require.ErrorContains(t, err, "undefined variable ${A}")
}

// TestLoadProcessEnviron uses the real process environment (Environ nil),
// so it cannot run in parallel.
func TestLoadProcessEnviron(t *testing.T) {
	t.Setenv("APPSPEC_TEST_IMAGE", "from-process")
	dir := t.TempDir()
	p := filepath.Join(dir, "app.yaml")
	require.NoError(t, os.WriteFile(p, []byte("modules:\n  m:\n    base_image: ${APPSPEC_TEST_IMAGE}\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "scalebox.env"), []byte("APPSPEC_TEST_IMAGE=from-file\n"), 0o644))
	app, err := Load(p, Options{})
	require.NoError(t, err)
	require.Equal(t, "from-process", app.Module("m").BaseImage)
}

// TestJSONRoundTrip: the broker stores App as JSON, so it must come back
// identical.
func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"app-primes", "retry_test", "hello-scalebox", "vtask", "cluster-dir-copy", "app-copy", "beam-form", "start-file"} {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			app := loadTestdata(t, dir)
			requireRoundTrip(t, app)
		})
	}
	requireRoundTrip(t, &App{InitialStatus: "RUNNING", Modules: []*Module{{Name: "m"}}})
}

func requireRoundTrip(t *testing.T, app *App) {
	t.Helper()
	b, err := json.Marshal(app)
	require.NoError(t, err)
	var back App
	require.NoError(t, json.Unmarshal(b, &back))
	require.Equal(t, app, &back)
	b2, err := json.Marshal(&back)
	require.NoError(t, err)
	require.Equal(t, string(b), string(b2))
}

func TestJSONFieldNames(t *testing.T) {
	t.Parallel()
	app := loadTestdata(t, "beam-form")
	b, err := json.Marshal(app.Module("beam-make"))
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"name", "site", "base_image", "code_path", "arguments", "parameters", "slots", "task_dist_mode", "retry_rules", "task_max_seconds", "task_min_seconds", "task_batch_size", "task_global_timeout_scale", "key_group_regex", "initial_task_status", "output_text_size", "text_trunc_mode", "pod_id", "resources"} {
		require.Contains(t, m, k)
	}
	require.Equal(t, map[string]any{"*": 3.0, "134": 9.0, "135": 9.0, "139": 9.0}, m["retry_rules"])
	require.Equal(t, map[string]any{"cores": 8.0, "memory_mb": 32768.0, "gpus": 1.0, "expected_seconds": 1200.0}, m["resources"])
}

func TestAppSchemaDocument(t *testing.T) {
	t.Parallel()
	raw := schema.AppSchema()
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Equal(t, "https://json-schema.org/draft/2020-12/schema", doc["$schema"])
	require.Equal(t, schema.AppSchemaURL, doc["$id"])
	raw[0] = 'x'
	require.Equal(t, byte('{'), schema.AppSchema()[0], "AppSchema returns a copy")
	_, err := appSchema()
	require.NoError(t, err)
}
