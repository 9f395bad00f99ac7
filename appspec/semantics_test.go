package appspec

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSinkGraph(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		"self loop (retry_test)": "modules:\n  a: {sink_modules: [a]}\n",
		"router loop, explicit":  "parameters: {main_router: r}\nmodules:\n  r: {sink_modules: [a, b]}\n  a: {sink_modules: [r]}\n  b: {}\n",
		"router loop, implicit":  "parameters: {main_router: r}\nmodules:\n  r: {sink_modules: [a]}\n  a: {}\n",
		"diamond":                "modules:\n  a: {sink_modules: [b, c]}\n  b: {sink_modules: [d]}\n  c: {sink_modules: [d]}\n  d: {}\n",
		"repeated edge":          "modules:\n  a: {sink_modules: [b, b]}\n  b: {}\n",
		"placeholder sinks":      "modules:\n  cron: {sink_modules: [mod0, mod1]}\n  mod0:\n  mod1:\n",
	}
	for name, src := range ok {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			parseOK(t, src, nil)
		})
	}
	// A cycle that does not pass through the main router is still an error.
	list := parseErrs(t, "parameters: {main_router: r}\nmodules:\n  r: {sink_modules: [a]}\n  a: {sink_modules: [b]}\n  b: {sink_modules: [a]}\n", nil)
	require.Len(t, list, 1)
	requireErrorLine(t, list, "app.yaml:5:22: modules.b.sink_modules[0]: sink modules form a cycle: a → b → a")

	app := parseOK(t, "modules:\n  cron: {sink_modules: [mod0]}\n  mod0:\n", nil)
	require.Equal(t, "mod0", app.Modules[1].Name)
	require.Equal(t, "DEFAULT", app.Modules[1].TaskDistMode)
}

func TestEmptyMeansDefault(t *testing.T) {
	t.Parallel()
	src := `
modules:
  m:
    cluster: ${C}
    arguments:
      task_batch_size: '${N}'
      task_max_seconds: ${T}
      output_text_size: ${O}
    parameters:
      task_dist_mode: ${MODE}
      start_task: ${S}
      retry_rules: ${R}
      initial_task_status: "${ITS}"
    slots:
      - ${HOSTS}
    sink_modules: ${SINKS}
`
	empty := map[string]string{"C": "", "N": "", "T": "", "O": "", "MODE": "", "S": "", "R": "", "ITS": "", "HOSTS": "", "SINKS": ""}
	m := parseOK(t, src, empty).Module("m")
	require.Equal(t, "", m.Cluster)
	require.Equal(t, 1, m.TaskBatchSize)
	require.Equal(t, 0, m.TaskMaxSeconds)
	require.Equal(t, 65535, m.OutputTextSize)
	require.Equal(t, "DEFAULT", m.TaskDistMode)
	require.Equal(t, "READY", m.InitialTaskStatus)
	require.Nil(t, m.StartTasks)
	require.True(t, m.RetryRules.IsZero())
	require.Nil(t, m.Slots)
	require.Nil(t, m.SinkModules)
	require.Equal(t, map[string]string{"task_batch_size": "", "task_max_seconds": "", "output_text_size": ""}, m.Arguments)

	set := map[string]string{"C": "hpc", "N": "6", "T": "10", "O": "1048576", "MODE": "HOST-BOUND", "S": "ANY", "R": "['*:2']", "ITS": "INITIAL", "HOSTS": "n-0[01]:2", "SINKS": "m"}
	m = parseOK(t, src, set).Module("m")
	require.Equal(t, "hpc", m.Cluster)
	require.Equal(t, 6, m.TaskBatchSize, "quoted '${N}' becomes a number where the schema wants one")
	require.Equal(t, 10, m.TaskMaxSeconds)
	require.Equal(t, 1048576, m.OutputTextSize)
	require.Equal(t, "HOST-BOUND", m.TaskDistMode)
	require.Equal(t, "INITIAL", m.InitialTaskStatus)
	require.Equal(t, []string{"ANY"}, m.StartTasks)
	require.Equal(t, 2, m.RetryRules.MaxRetries(7))
	require.Equal(t, []string{"n-0[01]:2"}, m.Slots)
	require.Equal(t, []string{"m"}, m.SinkModules)
	require.Equal(t, "6", m.Arguments["task_batch_size"])
}

func TestExpansionIsData(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"COLON": "a: b", "LIST": "[1,2]", "NESTED": "${OTHER}", "OTHER": "x", "NUM": "007",
		"MOD": "calc", "TRUE": "true", "HASH": "x # y", "EMPTY": "",
	}
	app := parseOK(t, `
label: ${COLON}
comment: ${HASH}
version: ${NUM}
modules:
  ${MOD}:
    label: "${LIST}"
    base_image: ${NESTED}
    command: run $${NOT_A_VAR} $HOME $1 ${CLUSTER_DATA_DIR}/x
    environments:
      - FLAG=${TRUE}
      - E=${EMPTY}
    parameters:
      start_task: ${NUM}
      pod_id: ${TRUE}
`, vars)
	require.Equal(t, "a: b", app.Label, "values are not re-parsed as YAML")
	require.Equal(t, "x # y", app.Comment)
	require.Equal(t, "007", app.Version, "string fields keep the text")
	m := app.Module("calc")
	require.NotNil(t, m, "keys are expanded too")
	require.Equal(t, "[1,2]", m.Label)
	require.Equal(t, "${OTHER}", m.BaseImage, "expansion is single-pass")
	require.Equal(t, "run ${NOT_A_VAR} $HOME $1 ${CLUSTER_DATA_DIR}/x", m.Command)
	require.Equal(t, []string{"FLAG=true", "E="}, m.Environments)
	require.Equal(t, []string{"007"}, m.StartTasks)
	require.Equal(t, "true", m.PodID)
}

func TestFlowStyleTemplates(t *testing.T) {
	t.Parallel()
	// Scalebox substituted before parsing, so unquoted ${X} inside flow
	// collections must work.
	app := parseOK(t, `parameters: {main_router: ${R}}
modules:
  ${R}: {arguments: {code_path: ${PWD}/mr-code, slot_options: slot_on_head}, environments: [N=${N}]}
  calc: {slots: [ "${NODE}:${P}" ], parameters: {task_dist_mode: ${MODE}, retry_rules: {1: ${N}}}}
`, map[string]string{"R": "mr", "PWD": "/w", "N": "10", "NODE": "h0", "P": "2", "MODE": ""})
	require.Equal(t, "mr", app.MainRouter)
	require.Equal(t, "/w/mr-code", app.Module("mr").CodePath)
	require.Equal(t, []string{"N=10"}, app.Module("mr").Environments)
	calc := app.Module("calc")
	require.Equal(t, []string{"h0:2"}, calc.Slots)
	require.Equal(t, "DEFAULT", calc.TaskDistMode)
	require.Equal(t, 10, calc.RetryRules.MaxRetries(1))
	require.Equal(t, `{"1":10}`, calc.Parameters["retry_rules"])

	// Positions after a protected template do not move.
	list := parseErrs(t, "modules: {a: {label: ${X}, bogus: 1}}\n", map[string]string{"X": "x"})
	requireErrorLine(t, list, `app.yaml:1:28: modules.a.bogus: unknown key "bogus"`)
}

func TestYAMLFeatures(t *testing.T) {
	t.Parallel()
	app := parseOK(t, "modules:\n  a: &base\n    base_image: img\n    slots: [h0]\n    arguments: {task_max_seconds:\t10}\n  b:\n    <<: *base\n    slots: [h1]\n  c: *base\n", nil)
	require.Equal(t, "img", app.Module("b").BaseImage, "merge key")
	require.Equal(t, []string{"h1"}, app.Module("b").Slots, "explicit keys override merged ones")
	require.Equal(t, 10, app.Module("c").TaskMaxSeconds, "alias; a tab after the colon is fine")

	app = parseOK(t, `
modules:
  m:
    environments: {A: "1", B: two}
    parameters:
      node_progress_gap: {"n-[01]": 2, "n": 3}
      pod_id: 3
      start_task: [a, b, "", 0]
      retry_rules: ['1:3', 2, '*']
    arguments:
      dir_quota_gb: {"/d": 10}
`, nil)
	m := app.Module("m")
	require.Equal(t, []string{"A=1", "B=two"}, m.Environments, "environments may be a map")
	require.Equal(t, `{"n":3,"n-[01]":2}`, m.Parameters["node_progress_gap"], "an unquoted JSON map is kept as JSON text")
	require.Equal(t, `{"/d":10}`, m.Arguments["dir_quota_gb"])
	require.Equal(t, []string{"a", "b", "0"}, m.StartTasks)
	require.Equal(t, "3", m.PodID)
	require.Equal(t, 3, m.RetryRules.MaxRetries(1))
	require.Equal(t, 1, m.RetryRules.MaxRetries(2))
	require.Equal(t, 1, m.RetryRules.MaxRetries(9))
	require.Equal(t, `["1:3",2,"*"]`, m.Parameters["retry_rules"])
}

func TestClustersBlockKeptRaw(t *testing.T) {
	t.Parallel()
	app := parseOK(t, `
version: '1.0.0'
specs:
  vm: {num_cores: 4, mem_gb: 16.0}
clusters:
  inline:
    parameters: {base_data_dir: /shared/mydata, port: 22, whatever_key: yes}
modules: {m: {}}
`, nil)
	require.JSONEq(t, `{"clusters":{"inline":{"parameters":{"base_data_dir":"/shared/mydata","port":22,"whatever_key":"yes"}}},"specs":{"vm":{"mem_gb":16,"num_cores":4}}}`, string(app.ClusterDefs))
	require.Equal(t, "1.0.0", app.Version)
	require.Nil(t, parseOK(t, "modules: {m: {}}\n", nil).ClusterDefs)
}

func TestSlotOnHead(t *testing.T) {
	t.Parallel()
	app := parseOK(t, `
modules:
  a: {arguments: {slot_options: "tmpfs_workdir, slot_on_head"}}
  b: {parameters: {slot_on_head: yes}}
  c: {schedule_mode: HEAD}
  d: {parameters: {slot_options: slot_on_head}}
  e: {schedule_mode: NODE, arguments: {slot_options: reserved_on_exit}}
  f: {parameters: {slot_on_head: no}}
`, nil)
	for _, name := range []string{"a", "b", "c", "d"} {
		require.True(t, app.Module(name).SlotOnHead(), name)
	}
	for _, name := range []string{"e", "f"} {
		require.False(t, app.Module(name).SlotOnHead(), name)
	}
}

func TestResources(t *testing.T) {
	t.Parallel()
	app := parseOK(t, `
modules:
  a: {resources: {cores: 0.5, memory: 512, gpus: 0, expected_runtime: 90}}
  b: {resources: {cores: 4, memory: "1.5GiB", expected_runtime: "01:30:00"}}
  c: {resources: {memory: 2t, expected_runtime: 1h30m}}
`, nil)
	require.Equal(t, Resources{Cores: 0.5, MemoryMB: 512, ExpectedSeconds: 90}, app.Module("a").Resources)
	require.Equal(t, Resources{Cores: 4, MemoryMB: 1536, ExpectedSeconds: 5400}, app.Module("b").Resources)
	require.Equal(t, Resources{MemoryMB: 2 << 20, ExpectedSeconds: 5400}, app.Module("c").Resources)
}

func TestHostileInput(t *testing.T) {
	t.Parallel()
	// Billion laughs: aliases expand exponentially.
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	prev := "a"
	for i := 0; i < 8; i++ {
		name := string(rune('b' + i))
		bomb += name + ": &" + name + " [*" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + "]\n"
		prev = name
	}
	src := "modules:\n  m:\n    slots: *" + prev + "\n"
	list := parseErrs(t, bomb+src, nil)
	requireErrorLine(t, list, "document too large")

	// Many modules with dangling sinks stay fast: ten times the modules
	// take about ten times as long, not a hundred (no quadratic passes).
	// Relative, so that a loaded machine slows both sizes alike.
	timed := func(n int) time.Duration {
		var sb strings.Builder
		sb.WriteString("modules:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&sb, "  m%d: {sink_modules: [nope%d], parameters: {task_dist_mode: X}}\n", i, i)
		}
		start := time.Now()
		list := parseErrs(t, sb.String(), nil)
		took := time.Since(start)
		require.Len(t, list, 2*n)
		return took
	}
	small := timed(2000)
	large := timed(20000)
	require.Less(t, large, 40*small, "2,000 modules: %v; 20,000: %v", small, large)
}
