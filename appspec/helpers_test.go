package appspec

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// appDirEnv is the fake process environment used for testdata apps:
// ${PWD} is a fixed path so results do not depend on where tests run.
func appDirEnv(dir string, extra ...string) []string {
	return append([]string{"PWD=/work/apps/" + dir}, extra...)
}

// loadTestdata loads testdata/<dir>/app.yaml with the given extra env
// files (relative to that directory).
func loadTestdata(t *testing.T, dir string, envFiles ...string) *App {
	t.Helper()
	var files []string
	for _, f := range envFiles {
		files = append(files, filepath.Join("testdata", dir, f))
	}
	app, err := Load(filepath.Join("testdata", dir, "app.yaml"), Options{EnvFiles: files, Environ: appDirEnv(dir)})
	require.NoError(t, err)
	return app
}

func parseOK(t *testing.T, src string, vars map[string]string) *App {
	t.Helper()
	app, err := Parse("app.yaml", []byte(src), vars)
	require.NoError(t, err)
	require.NotNil(t, app)
	return app
}

func parseErrs(t *testing.T, src string, vars map[string]string) ErrorList {
	t.Helper()
	app, err := Parse("app.yaml", []byte(src), vars)
	require.Error(t, err)
	require.Nil(t, app)
	var list ErrorList
	require.True(t, errors.As(err, &list), "error %T is not an ErrorList", err)
	require.NotEmpty(t, list)
	for _, e := range list {
		require.Equal(t, "app.yaml", e.File)
	}
	return list
}

// requireErrorLine asserts that one error of list contains every part.
func requireErrorLine(t *testing.T, list ErrorList, parts ...string) {
	t.Helper()
	for _, e := range list {
		s := e.Error()
		ok := true
		for _, p := range parts {
			if !strings.Contains(s, p) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
	}
	require.Failf(t, "no matching error", "want an error containing %q, got:\n%s", parts, list.Error())
}

func moduleNames(app *App) []string {
	var out []string
	for _, m := range app.Modules {
		out = append(out, m.Name)
	}
	return out
}
