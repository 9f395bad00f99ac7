package pilot

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
)

// envMap fails on a variable set twice: a program exec'd directly would
// read the first, a shell the last.
func envMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		require.True(t, ok, "entry %q", kv)
		_, dup := m[k]
		require.False(t, dup, "%s set twice in %q", k, env)
		m[k] = v
	}
	return m
}

func TestTaskEnv(t *testing.T) {
	t.Parallel()
	spec := &appspec.Module{TaskBatchSize: 2, Environments: []string{"FROM_HOST=pinned", "MINE=1"}}
	slotEnv := dedupEnv(append([]string{
		"PATH=/bin", "TASK_ID=outer-job", "SCALEBOX_TOKEN=hook", "WORK_DIR=/w",
	}, spec.Environments...))
	sr := &slotRun{m: &module{spec: spec}, workDir: "/w", env: slotEnv}
	sr.attemptEnv, sr.moduleSets = attemptBase(sr.env, spec.Environments)

	hdr, err := json.Marshal(map[string]string{"from_module": "a", "from_host": "n1", "from_ip": "10.0.0.1"})
	require.NoError(t, err)
	for attempt := 1; attempt <= 2; attempt++ {
		env := envMap(t, taskEnv(sr, &api.LeasedTask{TaskID: 42, Attempt: attempt, Headers: hdr}, "s3cret"))
		require.Equal(t, map[string]string{
			"PATH": "/bin", "WORK_DIR": "/w", "MINE": "1",
			"SCALEBOX_TOKEN": "s3cret", // the attempt's, not the slot's hook secret
			"TASK_ID":        "42",     // not the one inherited from the pilot's own environment
			"TASK_ATTEMPT":   string(rune('0' + attempt)),
			"FROM_MODULE":    "a",
			"FROM_HOST":      "pinned", // the module's environments win
			"FROM_IP":        "10.0.0.1",
			"BATCH_FILE":     "/w/input-messages.txt",
		}, env)
	}
	require.Equal(t, "hook", envMap(t, sr.env)["SCALEBOX_TOKEN"], "the slot's scripts keep the hook secret")
}
