package appspec

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestErrorKinds: every kind of problem is reported as
// file:line:col: key.path: message.
func TestErrorKinds(t *testing.T) {
	t.Parallel()
	const calc = "modules:\n  calc:\n" // modules.calc starts at line 2; its keys at column 5
	for name, tc := range map[string]struct {
		src  string
		vars map[string]string
		want []string
	}{
		"unknown top-level key": {"modulez:\n  a: {}\n", nil,
			[]string{`app.yaml:1:1: modulez: unknown key "modulez" (did you mean "modules"?)`}},
		"unknown module key": {calc + "    base_imag: x\n", nil,
			[]string{`app.yaml:3:5: modules.calc.base_imag: unknown key "base_imag" (did you mean "base_image"?)`}},
		"unknown parameter": {calc + "    parameters:\n      task_dist_mod: HOST-BOUND\n", nil,
			[]string{`app.yaml:4:7: modules.calc.parameters.task_dist_mod: unknown key "task_dist_mod" (did you mean "task_dist_mode"?)`}},
		"unknown argument": {calc + "    arguments:\n      code_pth: /x\n", nil,
			[]string{`app.yaml:4:7: modules.calc.arguments.code_pth: unknown key "code_pth" (did you mean "code_path"?)`}},
		"unknown old argument": {calc + "    variables:\n      max_sleep_cout: 3\n", nil,
			[]string{`modules.calc.variables.max_sleep_cout: unknown key`, `(did you mean "max_sleep_count"?)`}},
		"unknown app parameter": {"parameters:\n  main_routr: calc\n" + calc, nil,
			[]string{`app.yaml:2:3: parameters.main_routr: unknown key "main_routr" (did you mean "main_router"?)`}},
		"unknown key without suggestion": {calc + "    zzzzzzzz: 1\n", nil,
			[]string{`app.yaml:3:5: modules.calc.zzzzzzzz: unknown key "zzzzzzzz"`}},
		"bad dist mode": {calc + "    parameters:\n      task_dist_mode: HOST_BOUND\n", nil,
			[]string{`app.yaml:4:23: modules.calc.parameters.task_dist_mode: value must be one of`, "HOST-BOUND"}},
		"bad dist mode from variable": {calc + "    parameters:\n      task_dist_mode: ${MODE}\n", map[string]string{"MODE": "ANY"},
			[]string{`app.yaml:4:23: modules.calc.parameters.task_dist_mode: value must be one of`}},
		"bad initial status": {"parameters:\n  initial_status: STARTED\n" + calc, nil,
			[]string{`app.yaml:2:19: parameters.initial_status: value must be one of 'RUNNING', 'INITIAL', 'PAUSED'`}},
		"negative number": {calc + "    arguments:\n      task_max_seconds: -5\n", nil,
			[]string{`app.yaml:4:25: modules.calc.arguments.task_max_seconds: minimum: got -5, want 0`}},
		"negative number via old name": {calc + "    parameters:\n      task_timeout_seconds: -1\n", nil,
			[]string{`app.yaml:4:29: modules.calc.parameters.task_timeout_seconds: minimum`}},
		"zero batch": {calc + "    parameters:\n      task_batch_size: 0\n", nil,
			[]string{`modules.calc.parameters.task_batch_size: minimum: got 0, want 1`}},
		"not a number": {calc + "    arguments:\n      max_idle_polls: many\n", nil,
			[]string{`app.yaml:4:23: modules.calc.arguments.max_idle_polls: got string, want integer`}},
		"fractional integer": {calc + "    arguments:\n      task_batch_size: 1.5\n", nil,
			[]string{`modules.calc.arguments.task_batch_size: got number, want integer`}},
		"wrong collection type": {calc + "    slots: {h0: 1}\n", nil,
			[]string{`app.yaml:3:5: modules.calc.slots: got object, want array`}},
		"module not a mapping": {"modules:\n  calc: [a]\n", nil,
			[]string{`app.yaml:2:3: modules.calc: got array, want object`}},
		"bad flag": {calc + "    parameters:\n      slot_recoverable: maybe\n", nil,
			[]string{`modules.calc.parameters.slot_recoverable: value must be one of`}},
		"bad retry rule": {calc + "    parameters:\n      retry_rules: \"['1:3','x:y']\"\n", nil,
			[]string{`app.yaml:4:20: modules.calc.parameters.retry_rules: bad rule "x:y": exit code must be`}},
		"bad retry backoff": {calc + "    parameters:\n      retry_backoff: soon\n", nil,
			[]string{`app.yaml:4:22: modules.calc.parameters.retry_backoff: "soon" is not a duration`}},
		"backoff max below base": {calc + "    parameters:\n      retry_backoff: 2m\n      retry_backoff_max: 30\n", nil,
			[]string{`app.yaml:5:26: modules.calc.parameters.retry_backoff_max: 30s is less than retry_backoff 2m0s`}},
		"bad retry count": {calc + "    parameters:\n      retry_rules: ['1:-3']\n", nil,
			[]string{`app.yaml:4:7: modules.calc.parameters.retry_rules: bad rule "1:-3": count must be`}},
		"bad retry map key": {calc + "    parameters:\n      retry_rules: {abc: 1}\n", nil,
			[]string{`modules.calc.parameters.retry_rules: invalid propertyName 'abc'`}},
		"bad retry map count": {calc + "    parameters:\n      retry_rules: {1: many}\n", nil,
			[]string{`modules.calc.parameters.retry_rules.1: got string, want integer`}},
		"duplicate retry code": {calc + "    parameters:\n      retry_rules: \"['2','2:3']\"\n", nil,
			[]string{`modules.calc.parameters.retry_rules: bad rule "2:3": exit code 2 given twice`}},
		"bad memory": {calc + "    resources:\n      memory: 4X\n", nil,
			[]string{`app.yaml:4:15: modules.calc.resources.memory: '4X' does not match pattern`}},
		"bad runtime": {calc + "    resources:\n      expected_runtime: five minutes\n", nil,
			[]string{`app.yaml:4:25: modules.calc.resources.expected_runtime: bad duration "five minutes"`}},
		"zero cores": {calc + "    resources: {cores: 0}\n", nil,
			[]string{`modules.calc.resources.cores: exclusiveMinimum: got 0, want 0`}},
		"negative gpus": {calc + "    resources: {gpus: -1}\n", nil,
			[]string{`modules.calc.resources.gpus: minimum: got -1, want 0`}},
		"unknown resource": {calc + "    resources: {mem: 4G}\n", nil,
			[]string{`modules.calc.resources.mem: unknown key "mem" (did you mean "memory"?)`}},
		"bad slot count": {calc + "    slots: [h0:x]\n", nil,
			[]string{`app.yaml:3:13: modules.calc.slots[0]: bad slot "h0:x": slot count must be`}},
		"bad slot regex": {calc + "    slots:\n      - \"(h0:1\"\n", nil,
			[]string{`app.yaml:4:9: modules.calc.slots[0]: bad slot "(h0:1": host expression is not a valid regular expression`}},
		"empty slot host from variables": {calc + "    slots: [\"${NODES}:${N}\"]\n", map[string]string{"NODES": "", "N": "2"},
			[]string{`modules.calc.slots[0]: bad slot ":2": empty host expression`}},
		"bad module name": {"modules:\n  my module: {}\n", nil,
			[]string{`app.yaml:2:3: modules.my module: bad module name "my module"`}},
		"bad slot option": {calc + "    arguments: {slot_options: \"slot_on_hed,tmpfs_workdir\"}\n", nil,
			[]string{`modules.calc.arguments.slot_options: unknown slot option "slot_on_hed" (did you mean "slot_on_head"?)`}},
		"bad key group regex": {calc + "    parameters: {key_group_regex: \"([0-9]+\"}\n", nil,
			[]string{`modules.calc.parameters.key_group_regex: bad regular expression`}},
		"bad key group index": {calc + "    parameters: {key_group_index: \"1;2\"}\n", nil,
			[]string{`modules.calc.parameters.key_group_index: '1;2' does not match pattern`}},
		"environment without =": {calc + "    environments:\n      - JUST_A_NAME\n", nil,
			[]string{`app.yaml:4:9: modules.calc.environments[0]: 'JUST_A_NAME' does not match pattern`}},
		"timeout scale": {calc + "    parameters: {task_global_timeout_scale: 0}\n", nil,
			[]string{`modules.calc.parameters.task_global_timeout_scale: exclusiveMinimum`}},
		"trunc mode": {calc + "    arguments: {text_trunc_mode: MIDDLE}\n", nil,
			[]string{`modules.calc.arguments.text_trunc_mode: value must be one of 'HEAD', 'TAIL'`}},
		"arguments vs parameters": {calc + "    arguments: {task_max_seconds: 10}\n    parameters: {task_max_seconds: 20}\n", nil,
			[]string{`app.yaml:4:36: modules.calc.parameters.task_max_seconds: 20 conflicts with arguments.task_max_seconds 10`}},
		"schedule mode conflict": {calc + "    schedule_mode: HEAD\n    parameters: {schedule_mode: NODE}\n", nil,
			[]string{`app.yaml:3:20: modules.calc.schedule_mode: conflicts with parameters.schedule_mode "NODE"`}},
		"no modules": {"name: x\n", nil,
			[]string{`app.yaml:1:1: no modules`}},
		"empty modules": {"name: x\nmodules: {}\n", nil,
			[]string{`app.yaml:2:1: modules: no modules`}},
		"null modules": {"name: x\nmodules:\n", nil,
			[]string{`app.yaml:2:1: modules: no modules`}},
		"not a mapping": {"- a\n- b\n", nil,
			[]string{`app.yaml:1:1: the document must be a mapping`}},
		"empty document": {"", nil,
			[]string{`app.yaml:1:1: empty document`}},
		"yaml syntax": {"modules:\n  a: b: c\n", nil,
			[]string{`app.yaml:2: invalid YAML:`}},
		"type of name": {"name: [a]\n" + calc, nil,
			[]string{`app.yaml:1:1: name: got array, want string`}},
		"unknown sink": {"modules:\n  a:\n    sink_modules: [b, calc]\n  calc: {}\n  bb: {}\n", nil,
			[]string{`app.yaml:3:20: modules.a.sink_modules[0]: unknown sink module "b" (did you mean "bb"?)`}},
		"unknown main router": {"parameters: {main_router: routr}\nmodules: {router: {}}\n", nil,
			[]string{`app.yaml:1:27: parameters.main_router: main router "routr" is not a module of this app (did you mean "router"?)`}},
		"sink cycle": {"modules:\n  a: {sink_modules: [b]}\n  b: {sink_modules: [a]}\n", nil,
			[]string{`app.yaml:3:22: modules.b.sink_modules[0]: sink modules form a cycle: a → b → a`}},
		"long sink cycle": {"modules:\n  a: {sink_modules: [b]}\n  b: {sink_modules: [c]}\n  c: {sink_modules: [a, c]}\n", nil,
			[]string{`app.yaml:4:22: modules.c.sink_modules[0]: sink modules form a cycle: a → b → c → a`}},
		"undefined variable": {"name: app-${TAG}\nmodules:\n  calc:\n    base_image: img:${TAG}\n", nil,
			[]string{`app.yaml:4:17: modules.calc.base_image: undefined variable ${TAG}`}},
		"undefined variable in key": {"modules:\n  ${MOD}: {}\n", nil,
			[]string{`app.yaml:2:3: modules: undefined variable ${MOD}`}},
		"bad variable syntax": {calc + "    command: run ${A-b}\n", nil,
			[]string{`app.yaml:3:14: modules.calc.command: bad variable reference "${A-b}"`}},
		"unterminated variable": {calc + "    command: \"run ${A\"\n", nil,
			[]string{`modules.calc.command: unterminated variable reference "${A"`}},
		"merge of a scalar": {"modules:\n  a:\n    <<: x\n", nil,
			[]string{`app.yaml:3:5: modules.a: merge key << needs a mapping`}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireErrorLine(t, parseErrs(t, tc.src, tc.vars), tc.want...)
		})
	}
}

// TestAllErrorsReported: Parse reports every problem, ordered by position.
func TestAllErrorsReported(t *testing.T) {
	t.Parallel()
	list := parseErrs(t, `name: x
parameters:
  main_router: nowhere
modules:
  a:
    base_imag: x
    parameters:
      task_dist_mode: SOMETIMES
      retry_rules: "['q']"
    slots: ["h0:-1"]
    sink_modules: [zz]
  b:
    image: ${UNDEFINED}
`, nil)
	require.Len(t, list, 7, list.Error())
	var lines []int
	for _, e := range list {
		lines = append(lines, e.Line)
	}
	require.Equal(t, []int{3, 6, 8, 9, 10, 11, 13}, lines)
	require.Equal(t, len(list), strings.Count(list.Error(), "\n")+1)

	var one *Error
	require.True(t, errors.As(error(list), &one))
	require.Equal(t, 3, one.Line)
}

func TestErrorFormat(t *testing.T) {
	t.Parallel()
	require.Equal(t, "a.yaml:3:7: x.y: bad", (&Error{File: "a.yaml", Line: 3, Column: 7, Path: "x.y", Msg: "bad"}).Error())
	require.Equal(t, "a.yaml:3: bad", (&Error{File: "a.yaml", Line: 3, Msg: "bad"}).Error())
	require.Equal(t, "a.yaml: x: bad", (&Error{File: "a.yaml", Path: "x", Msg: "bad"}).Error())
}

func TestSuggest(t *testing.T) {
	t.Parallel()
	cands := []string{"modules", "parameters", "main_router", "task_max_seconds"}
	require.Equal(t, ` (did you mean "modules"?)`, suggest("modlues", cands))
	require.Equal(t, ` (did you mean "parameters"?)`, suggest("Parameter", cands))
	require.Equal(t, "", suggest("xyz", cands))
	require.Equal(t, 0, editDistance("", ""))
	require.Equal(t, 3, editDistance("abc", ""))
	require.Equal(t, 1, editDistance("ab", "ba"))
}
