package appspec

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

var fuzzVars = map[string]string{
	"CLUSTER": "local", "TAG": "bash", "NUM_GROUPS": "10", "CALC_NODE": "h0", "NUM_PARALLEL": "1",
	"TASK_DIST_MODE": "", "PWD": "/w", "N": "3", "EMPTY": "", "COLON": "a: b",
}

// FuzzParse: Parse never panics; it returns either an App that survives a
// JSON round trip, or an ErrorList whose entries name the file.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*", "app.yaml"))
	require.NoError(f, err)
	for _, p := range files {
		data, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(data)
	}
	for _, s := range []string{
		"modules: {a: {sink_modules: [a]}}",
		"modules: {a: {sink_modules: [b]}, b: {sink_modules: [a]}}",
		"jobs:\n  a:\n    hosts: ${CALC_NODE}:${NUM_PARALLEL}\n    variables: {task_timeout_seconds: '${N}'}\n",
		"modules:\n  a: &x {slots: [h0]}\n  b: {<<: *x}\n",
		"parameters: {main_router: r, message_router: r}\nmodules: {r: {}}",
		"modules: {a: {parameters: {retry_rules: {1: 3, '*': 1}}, resources: {memory: 4G, expected_runtime: 1h}}}",
		"a: &a [*a]",
		"modules: {${X}: {}}",
		"modules: {a: {label: $⦃N⦄}}",
		"- [a, {b: c}]",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		app, err := Parse("fuzz.yaml", data, fuzzVars)
		if err != nil {
			require.Nil(t, app)
			var list ErrorList
			if errors.As(err, &list) {
				require.NotEmpty(t, list)
				for _, e := range list {
					require.Equal(t, "fuzz.yaml", e.File)
					_ = e.Error()
				}
			}
			return
		}
		require.NotNil(t, app)
		require.NotEmpty(t, app.Modules)
		b, err := json.Marshal(app)
		require.NoError(t, err)
		var back App
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, app, &back)
	})
}

// FuzzParseRetryRules: never panics; accepted rules render back to an
// equal value both through String and through JSON.
func FuzzParseRetryRules(f *testing.F) {
	for _, s := range []string{
		"['1:3','2:2','*']", "['91','92:3']", "['*:3','134:9']", `{"1":3,"2":2}`, "",
		"['2:2','13:3','-100:3','124:2', '10:2']", `[91, "92:3"]`, "1:3,*", "{1: 3, '*': 1}",
		"['1:3", `{"1"}`, "[''']", `["\"1\":2"]`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRetryRules(s)
		if err != nil {
			return
		}
		for _, code := range []int{-100, 0, 1, 2, 124, 255} {
			require.GreaterOrEqual(t, r.MaxRetries(code), 0)
		}
		back, err := ParseRetryRules(r.String())
		require.NoError(t, err)
		require.Equal(t, r, back)
		b, err := json.Marshal(r)
		require.NoError(t, err)
		var dec RetryRules
		require.NoError(t, json.Unmarshal(b, &dec))
		require.Equal(t, r, dec)
	})
}

// FuzzReadEnv: the env-file parser never panics.
func FuzzReadEnv(f *testing.F) {
	for _, s := range []string{"A=1\n# c\nexport B='x'\nC=\"y\\n\" # z\n", "=\n", "A='\n", "A=\"\\", "\ufeffA=1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vars, err := parseEnv("fuzz.env", data)
		if err == nil {
			require.NotNil(t, vars)
		}
	})
}
