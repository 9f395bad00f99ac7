// Tests of the app-primes example: the app definition loads, and the bash
// module scripts behave as the module contract (spec §3) requires. The
// scripts run directly with a stand-in `scalebox` command that records its
// calls and keeps semaphores in files; the real pipeline runner is tested
// elsewhere.
package appprimes_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/appspec"
)

// expectedChunks are the calc tasks for N=1000, NUM_GROUPS=10 and the
// number of primes in each (sum 168).
var expectedChunks = []struct {
	body  string
	count int
}{
	{"000000001_000000100", 25}, {"000000101_000000200", 21}, {"000000201_000000300", 16},
	{"000000301_000000400", 16}, {"000000401_000000500", 17}, {"000000501_000000600", 14},
	{"000000601_000000700", 16}, {"000000701_000000800", 14}, {"000000801_000000900", 15},
	{"000000901_000001000", 14},
}

func TestAppDefinitionLoads(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs(".")
	require.NoError(t, err)
	app, err := appspec.Load("app.yaml", appspec.Options{Environ: []string{"PWD=" + dir}})
	require.NoError(t, err)
	require.Equal(t, "app-primes-g10-bash", app.Name)
	require.Equal(t, "local", app.Cluster)
	require.Equal(t, "mr-module", app.MainRouter)

	calc := app.Module("my-module")
	require.NotNil(t, calc)
	require.Equal(t, "local", calc.Site)
	require.Equal(t, []string{"h0:1"}, calc.Slots)
	require.Equal(t, "DEFAULT", calc.TaskDistMode)
	require.Equal(t, filepath.Join(dir, "code"), calc.CodePath)
	require.Equal(t, appspec.Resources{Cores: 1, MemoryMB: 256, ExpectedSeconds: 30}, calc.Resources)
	require.Empty(t, calc.SinkModules, "results go to the main router")

	mr := app.Module("mr-module")
	require.NotNil(t, mr)
	require.True(t, mr.SlotOnHead())
	require.Equal(t, filepath.Join(dir, "mr-code"), mr.CodePath)
	require.Equal(t, []string{"NUM_GROUPS=10"}, mr.Environments)

	for _, m := range app.Modules {
		info, err := os.Stat(filepath.Join(m.CodePath, "run.sh"))
		require.NoError(t, err)
		require.NotZero(t, info.Mode()&0o111, "%s/run.sh must be executable", m.Name)
	}

	// Overrides from the process environment win over scalebox.env.
	app, err = appspec.Load("app.yaml", appspec.Options{Environ: []string{"PWD=" + dir, "NUM_PARALLEL=4", "CALC_NODE=n-[01][01]", "TASK_DIST_MODE=HOST-BOUND"}})
	require.NoError(t, err)
	require.Equal(t, []string{"n-[01][01]:4"}, app.Module("my-module").Slots)
	require.Equal(t, "HOST-BOUND", app.Module("my-module").TaskDistMode)
}

// fakeScalebox installs a stand-in `scalebox` command and returns the
// environment to run scripts with and the directory holding its state.
func fakeScalebox(t *testing.T) (env []string, state string) {
	t.Helper()
	for _, tool := range []string{"bash", "awk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	state = t.TempDir()
	bin := filepath.Join(state, "bin")
	require.NoError(t, os.Mkdir(bin, 0o755))
	script := `#!/bin/bash
echo "SEMAPHORE_AUTO_CREATE=${SEMAPHORE_AUTO_CREATE:-} $*" >> "$FAKE_STATE/calls.log"
if [ "$1 $2" = "semaphore increment-n" ]; then
    f="$FAKE_STATE/sema.$3"
    if [ ! -f "$f" ] && [ "${SEMAPHORE_AUTO_CREATE:-}" != yes ]; then echo "semaphore $3 not found" >&2; exit 2; fi
    v=$(cat "$f" 2>/dev/null || echo 0)
    echo $((v + $4)) > "$f"
fi
`
	require.NoError(t, os.WriteFile(filepath.Join(bin, "scalebox"), []byte(script), 0o755))
	env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "FAKE_STATE="+state)
	return env, state
}

func runScript(t *testing.T, env []string, script string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("bash", append([]string{script}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func calls(t *testing.T, state string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "calls.log"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func TestCalcCountsPrimes(t *testing.T) {
	t.Parallel()
	env, state := fakeScalebox(t)
	cases := []struct {
		body  string
		count int
	}{
		{expectedChunks[0].body, 25}, {expectedChunks[1].body, 21}, {expectedChunks[4].body, 17},
		{expectedChunks[9].body, 14}, {"000000001_000010000", 1229}, {"000090001_000100000", 879},
		{"000000002_000000002", 1}, {"000000001_000000001", 0}, {"000000024_000000028", 0},
	}
	var want []string
	for _, c := range cases {
		out, err := runScript(t, env, "code/run.sh", c.body)
		require.NoError(t, err, out)
		want = append(want, "SEMAPHORE_AUTO_CREATE= task add -H part_primes="+strconv.Itoa(c.count)+" "+c.body)
	}
	require.Equal(t, want, calls(t, state))

	for _, bad := range []string{"", "abc", "1-100", "000000200_000000100"} {
		_, err := runScript(t, env, "code/run.sh", bad)
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, bad)
		require.Contains(t, []int{110, 111}, ee.ExitCode(), bad)
	}
	require.Len(t, calls(t, state), len(cases), "failed tasks emit nothing")
}

func TestRouterSplits(t *testing.T) {
	t.Parallel()
	env, state := fakeScalebox(t)
	for _, tc := range []struct {
		n, groups string
		want      []string
	}{
		{"1000", "10", nil}, // filled from expectedChunks below
		{"1005", "10", []string{"my-module,000000001_000000101", "my-module,000000910_000001005"}},
		{"5", "10", []string{"my-module,000000001_000000001", "my-module,000000005_000000005"}},
		{"7", "1", []string{"my-module,000000001_000000007"}},
	} {
		work := t.TempDir()
		out, err := runScript(t, append(env, "WORK_DIR="+work, "NUM_GROUPS="+tc.groups), "mr-code/run.sh", tc.n, "{}")
		require.NoError(t, err, out)
		b, err := os.ReadFile(filepath.Join(work, "sink-tasks.txt"))
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if tc.want == nil {
			require.Len(t, lines, len(expectedChunks))
			for i, c := range expectedChunks {
				require.Equal(t, "my-module,"+c.body, lines[i])
			}
			continue
		}
		require.Equal(t, tc.want[0], lines[0], tc.n)
		require.Equal(t, tc.want[len(tc.want)-1], lines[len(lines)-1], tc.n)
	}
	for _, bad := range []string{"0", "-3", "ten", ""} {
		_, err := runScript(t, append(env, "WORK_DIR="+t.TempDir()), "mr-code/run.sh", bad, "")
		var ee *exec.ExitError
		require.ErrorAs(t, err, &ee, bad)
		require.Equal(t, 110, ee.ExitCode(), bad)
	}
	require.Empty(t, calls(t, state), "splitting only writes sink-tasks.txt")
}

// TestPipelineByHand plays the engine: start task 1000 → router → ten calc
// tasks → ten results back to the router → semaphore sum_value = 168.
func TestPipelineByHand(t *testing.T) {
	t.Parallel()
	env, state := fakeScalebox(t)
	work := t.TempDir()
	env = append(env, "WORK_DIR="+work, "NUM_GROUPS=10")
	out, err := runScript(t, env, "mr-code/run.sh", "1000", `{"from_ip":"10.0.0.1"}`)
	require.NoError(t, err, out)
	b, err := os.ReadFile(filepath.Join(work, "sink-tasks.txt"))
	require.NoError(t, err)

	var counts []int
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		module, body, ok := strings.Cut(line, ",")
		require.True(t, ok)
		require.Equal(t, "my-module", module)
		require.Equal(t, expectedChunks[i].body, body)
		out, err := runScript(t, env, "code/run.sh", body)
		require.NoError(t, err, out)
		c := calls(t, state)
		last := c[len(c)-1]
		prefix := "SEMAPHORE_AUTO_CREATE= task add -H part_primes="
		require.True(t, strings.HasPrefix(last, prefix), last)
		n, err := strconv.Atoi(strings.Fields(strings.TrimPrefix(last, prefix))[0])
		require.NoError(t, err)
		counts = append(counts, n)
		// The engine delivers the result to the router with from_module set.
		headers := `{"from_module":"my-module","from_host":"h0","part_primes":"` + strconv.Itoa(n) + `"}`
		out, err = runScript(t, env, "mr-code/run.sh", body, headers)
		require.NoError(t, err, out)
	}
	var want []int
	for _, c := range expectedChunks {
		want = append(want, c.count)
	}
	require.Equal(t, want, counts)
	sum, err := os.ReadFile(filepath.Join(state, "sema.app-primes:sum_value"))
	require.NoError(t, err)
	require.Equal(t, "168", strings.TrimSpace(string(sum)))
	require.Contains(t, calls(t, state), "SEMAPHORE_AUTO_CREATE=yes semaphore increment-n app-primes:sum_value 25")

	// A result from an unknown module is refused.
	_, err = runScript(t, env, "mr-code/run.sh", "x", `{"from_module":"other"}`)
	require.Error(t, err)
}
