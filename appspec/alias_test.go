package appspec

import (
	"fmt"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/stretchr/testify/require"
)

// TestAliasesInMaps covers every alias of parameters and arguments: the
// value must arrive under the canonical key only.
func TestAliasesInMaps(t *testing.T) {
	t.Parallel()
	type tc struct {
		block, alias, canonical, value string
	}
	var cases []tc
	for _, block := range []string{"app-parameters", "parameters", "arguments"} {
		kind := map[string]string{"app-parameters": kindAppParams, "parameters": kindParams, "arguments": kindArgs}[block]
		for alias, canon := range aliases[kind] {
			cases = append(cases, tc{block, alias, canon, ""})
		}
	}
	values := map[string]string{ // a valid value for each canonical key
		"main_router": "m", "default_idle_polls": "20", "start_task": "ANY", "task_max_seconds": "30",
		"router_index": "1", "task_batch_size": "4", "task_dedup_cache_ttl_minutes": "65",
		"key_group_regex": "^([0-9]+)", "key_group_index": "1,2", "max_tasks_per_minute": "3",
		"global_vtask_size": "2", "group_vtask_size": "2", "host_vtask_size": "2", "visible": "no",
		"poll_interval_seconds": "12", "max_idle_polls": "120", "dir_quota_gb": `{"/d":1}`, "free_space_gb": "/d~10",
	}
	for _, c := range cases {
		t.Run(c.block+"/"+c.alias, func(t *testing.T) {
			t.Parallel()
			v, ok := values[c.canonical]
			require.True(t, ok, "no test value for %s", c.canonical)
			var src string
			if c.block == "app-parameters" {
				src = fmt.Sprintf("parameters:\n  %s: '%s'\nmodules:\n  m: {}\n", c.alias, v)
			} else {
				src = fmt.Sprintf("parameters:\n  main_router: m\nmodules:\n  m:\n    %s:\n      %s: '%s'\n", c.block, c.alias, v)
			}
			app := parseOK(t, src, nil)
			got := app.Parameters
			if c.block == "parameters" {
				got = app.Module("m").Parameters
			} else if c.block == "arguments" {
				got = app.Module("m").Arguments
			}
			require.Equal(t, v, got[c.canonical])
			require.NotContains(t, got, c.alias)
		})
	}
}

func TestAliasesStructural(t *testing.T) {
	t.Parallel()
	app := parseOK(t, `
parameters:
  message_router: r
jobs:
  a:
    variables: {code_path: /c, task_timeout_seconds: 7, bulk_message_size: 3}
    parameters: {start_message: go, message_router_index: 2, task_cache_expired_minutes: 65}
    hosts: [h0:2]
    paths: [/x:/y]
    sink_jobs: [b]
    sink_vjobs: [remote]
  b: {}
  r: {}
`, nil)
	require.Equal(t, "r", app.MainRouter)
	a := app.Module("a")
	require.Equal(t, "/c", a.CodePath)
	require.Equal(t, 7, a.TaskMaxSeconds)
	require.Equal(t, 3, a.TaskBatchSize)
	require.Equal(t, []string{"go"}, a.StartTasks)
	require.Equal(t, "2", a.Parameters["router_index"])
	require.Equal(t, "65", a.Parameters["task_dedup_cache_ttl_minutes"])
	require.Equal(t, []string{"h0:2"}, a.Slots)
	require.Equal(t, []string{"/x:/y"}, a.Volumes)
	require.Equal(t, []string{"b"}, a.SinkModules)
	require.Equal(t, []string{"remote"}, a.SinkVModules, "sink_vmodules may name modules of other apps")

	// default_message_router and the dual task_* keys in parameters.
	app = parseOK(t, `
parameters: {default_message_router: r}
modules:
  r:
    parameters: {task_timeout_seconds: 9, bulk_message_size: 5, task_min_seconds: 1}
`, nil)
	require.Equal(t, "r", app.MainRouter)
	r := app.Module("r")
	require.Equal(t, 9, r.TaskMaxSeconds)
	require.Equal(t, 5, r.TaskBatchSize)
	require.Equal(t, 1, r.TaskMinSeconds)
}

func TestAliasConflicts(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		src  string
		want []string
	}{
		"jobs and modules":        {"jobs: {a: {}}\nmodules: {b: {}}\n", []string{"app.yaml:2:1: modules:", `"modules" and "jobs" (line 1) are the same key`, `"jobs" is the old name of "modules"`}},
		"variables and arguments": {"modules:\n  m:\n    arguments: {code_path: /a}\n    variables: {code_path: /b}\n", []string{"app.yaml:4:5: modules.m.variables:", "same key"}},
		"two old names":           {"modules:\n  m:\n    arguments:\n      dir_free_gb: a\n      space_free_gb: b\n", []string{"app.yaml:5:7: modules.m.arguments.space_free_gb:", `"space_free_gb" and "dir_free_gb" (line 4) are the same key`}},
		"routers":                 {"parameters:\n  main_router: a\n  message_router: a\nmodules: {a: {}}\n", []string{"app.yaml:3:3: parameters.message_router:", "same key"}},
		"duplicate":               {"modules:\n  m:\n    label: a\n    label: b\n", []string{"app.yaml:4:5: modules.m.label:", `duplicate key "label" (first at line 3)`}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireErrorLine(t, parseErrs(t, tc.src, nil), tc.want...)
		})
	}
}

// TestSchemaKnowsAliasTargets keeps the alias tables and the schema in step.
func TestSchemaKnowsAliasTargets(t *testing.T) {
	t.Parallel()
	for kind, table := range aliases {
		obj := schemaDef(t, kind)
		require.Equal(t, kind, schemaKind(obj))
		for alias, canon := range table {
			_, known := obj.Properties[canon]
			require.True(t, known, "%s: alias %s → %s: canonical key not in schema", kind, alias, canon)
			_, isProp := obj.Properties[alias]
			require.False(t, isProp, "%s: alias %s is also a canonical key", kind, alias)
		}
	}
}

// schemaDef returns the compiled object schema of an alias-table kind.
func schemaDef(t *testing.T, kind string) *jsonschema.Schema {
	t.Helper()
	root, err := appSchema()
	require.NoError(t, err)
	module := resolveRef(root.Properties["modules"].AdditionalProperties.(*jsonschema.Schema))
	switch kind {
	case kindApp:
		return root
	case kindAppParams:
		return resolveRef(root.Properties["parameters"])
	case kindModule:
		return module
	case kindArgs:
		return resolveRef(module.Properties["arguments"])
	case kindParams:
		return resolveRef(module.Properties["parameters"])
	}
	require.Failf(t, "unknown kind", "%q", kind)
	return nil
}
