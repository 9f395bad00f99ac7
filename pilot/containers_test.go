package pilot

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/container"
)

func TestBinds(t *testing.T) {
	work := container.Bind{Source: "/s/work", Target: "/work", Why: "work dir (WORK_DIR)"}
	local := container.Bind{Source: "/s/data/app-7", Target: "/local_data_root", Why: "node-local data dir of the app"}
	data := container.Bind{Source: "/data", Target: "/cluster_data_root", Why: "site data_root"}
	code := container.Bind{Source: "/code", Target: "/app/bin", ReadOnly: true, Why: "arguments.code_path"}
	run := container.Bind{Source: "/s/run", Target: "/.scalebox/run", Why: "pilot run dir (proxy and slot agent sockets)"}
	bin := container.Bind{Source: "/opt/scalebox", Target: "/.scalebox/bin/scalebox", ReadOnly: true, Why: "scalebox binary (slot agent and CLI)"}
	noData := "disable_local_mapping,disable_data_mapping"

	for _, tc := range []struct {
		name           string
		m              appspec.Module
		dataRoot       string
		localData      string
		runDir, binary string
		want           []container.Bind
	}{
		{name: "code_path only", m: appspec.Module{CodePath: "/code"}, localData: local.Source,
			want: []container.Bind{work, local, code}},
		{name: "code_path argument only", m: appspec.Module{Arguments: map[string]string{"code_path": "/code"}}, localData: local.Source,
			want: []container.Bind{work, local, code}},
		{name: "code_path field and argument: one bind", m: appspec.Module{CodePath: "/code", Arguments: map[string]string{"code_path": "/code"}},
			localData: local.Source, want: []container.Bind{work, local, code}},
		{name: "volumes", m: appspec.Module{Volumes: []string{"a:/b", "/h:/c:ro", "/same"}}, want: []container.Bind{work,
			{Source: "a", Target: "/b", Why: "volumes[0]"},
			{Source: "/h", Target: "/c", ReadOnly: true, Why: "volumes[1]"},
			{Source: "/same", Target: "/same", Why: "volumes[2]"}}},
		{name: "data root set", dataRoot: "/data", localData: local.Source, want: []container.Bind{work, local, data}},
		{name: "no local data, no data root", want: []container.Bind{work}},
		{name: "slot_options argument drops data binds", m: appspec.Module{Arguments: map[string]string{"slot_options": noData}},
			dataRoot: "/data", localData: local.Source, want: []container.Bind{work}},
		{name: "slot_options parameter drops one", m: appspec.Module{Parameters: map[string]string{"slot_options": "disable_data_mapping"}},
			dataRoot: "/data", localData: local.Source, want: []container.Bind{work, local}},
		{name: "everything, in order", m: appspec.Module{CodePath: "/code", Volumes: []string{"/h:/c:ro"}},
			dataRoot: "/data", localData: local.Source, runDir: run.Source, binary: bin.Source,
			want: []container.Bind{work, local, data, code, {Source: "/h", Target: "/c", ReadOnly: true, Why: "volumes[0]"}, run, bin}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Binds(&tc.m, ContainerConfig{DataRoot: tc.dataRoot}, work.Source, tc.localData, tc.runDir, tc.binary)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}

	t.Run("bad volume", func(t *testing.T) {
		m := &appspec.Module{Name: "calc", Volumes: []string{"/ok", "/a:/b:/c:ro"}}
		got, err := Binds(m, ContainerConfig{}, "/s/work", "", "", "")
		require.Nil(t, got)
		require.ErrorContains(t, err, "module calc")
		require.ErrorContains(t, err, "volumes[1]")
	})
}

// TestBindsPlan runs Binds through container.Plan with real dirs.
func TestBindsPlan(t *testing.T) {
	work, root, other := t.TempDir(), t.TempDir(), t.TempDir()
	sub := filepath.Join(root, "sub")
	require.NoError(t, os.Mkdir(sub, 0o755))
	cfg := ContainerConfig{DataRoot: root}

	t.Run("nested volume collapses into the data root", func(t *testing.T) {
		m := &appspec.Module{Volumes: []string{sub + ":/cluster_data_root/sub"}}
		raw, err := Binds(m, cfg, work, "", "", "")
		require.NoError(t, err)
		got, err := container.Plan(raw)
		require.NoError(t, err)
		require.Equal(t, container.Binds{
			{Source: root, Target: "/cluster_data_root", Why: "site data_root (covers volumes[0])"},
			{Source: work, Target: "/work", Why: "work dir (WORK_DIR)"},
		}, got)
	})

	t.Run("volume on /work conflicts with the work dir", func(t *testing.T) {
		m := &appspec.Module{Volumes: []string{other + ":/work"}}
		raw, err := Binds(m, cfg, work, "", "", "")
		require.NoError(t, err)
		_, err = container.Plan(raw)
		for _, s := range []string{"work dir (WORK_DIR)", "volumes[0]", "/work", work, other} {
			require.ErrorContains(t, err, s)
		}
	})
}

func TestContainerEnv(t *testing.T) {
	// No t.Parallel: t.Setenv.
	for k, v := range map[string]string{
		"PATH": "/host/bin:/usr/bin", "TMPDIR": "/host/tmp", "PWD": "/host/pwd", "LD_LIBRARY_PATH": "/host/lib",
		"HOME": "/home/alice", "APPTAINERENV_X": "1", "SINGULARITY_FOO": "1", "CONTAINERS_CONF": "/host/c.conf",
		"UID": "1000", "MYVAR": "kept",
	} {
		t.Setenv(k, v)
	}
	const wantPath = "/.scalebox/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	for _, tc := range []struct {
		name string
		oci  bool
		mode container.Mode
		home []string // every HOME value, in order
	}{
		{"podman slot", true, container.PerSlot, []string{"/root"}},
		{"podman task", true, container.PerTask, []string{"/root"}},
		{"apptainer slot", false, container.PerSlot, []string{"/home/alice"}},
		{"apptainer task", false, container.PerTask, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := containerEnv(tc.oci, tc.mode)
			require.Equal(t, "PATH="+wantPath, env[0])
			vals := map[string][]string{}
			for _, kv := range env {
				k, v, _ := strings.Cut(kv, "=")
				vals[k] = append(vals[k], v)
			}
			require.Equal(t, []string{wantPath}, vals["PATH"])
			require.Equal(t, []string{"/tmp"}, vals["TMPDIR"])
			require.Equal(t, []string{"kept"}, vals["MYVAR"])
			require.Equal(t, tc.home, vals["HOME"])
			for _, k := range []string{"PWD", "LD_LIBRARY_PATH", "APPTAINERENV_X", "SINGULARITY_FOO", "CONTAINERS_CONF", "UID"} {
				require.NotContains(t, vals, k)
			}
		})
	}
}

func TestToHost(t *testing.T) {
	binds := []container.Bind{
		{Source: "/h/work", Target: "/work"},
		{Source: "/h/deep", Target: "/work/sub"},
		{Source: "/h/code", Target: "/app/bin"},
	}
	for path, want := range map[string]string{
		"/work/sub/f":  "/h/deep/f",    // deepest target wins
		"/work/sub":    "/h/deep",      // exact target
		"/work":        "/h/work",      // exact target
		"/work/subx":   "/h/work/subx", // /work/sub is not a dir of it
		"/work/a/b":    "/h/work/a/b",
		"/app/bin/x":   "/h/code/x",
		"/workshop/x":  "/workshop/x", // prefix, not a dir
		"/etc/passwd":  "/etc/passwd", // under no bind
		"relative/dir": "relative/dir",
	} {
		require.Equal(t, want, toHost(binds, path), path)
	}
}

func TestContainerName(t *testing.T) {
	for in, want := range map[string]string{
		"my module/x": "my_module_x",
		"ok-Name_1.2": "ok-Name_1.2",
		"a:b@c":       "a_b_c",
		"été":         "_t_",
		"":            "",
	} {
		require.Equal(t, want, containerName(in), in)
	}
}

func TestExplainBinds(t *testing.T) {
	code, vol := t.TempDir(), t.TempDir()
	m := &appspec.Module{Name: "calc", CodePath: code, Volumes: []string{vol + ":/vol:ro"}}
	var buf bytes.Buffer
	require.NoError(t, ExplainBinds(&buf, m, 7, ContainerConfig{}, "/scratch", ""))
	out := buf.String()
	require.NotContains(t, out, "scalebox-explain-")

	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Equal(t, []string{"TARGET", "SOURCE", "MODE", "WHY"}, strings.Fields(lines[0]))
	rows := map[string][2]string{} // target -> source, mode
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		rows[f[0]] = [2]string{f[1], f[2]}
	}
	require.Equal(t, map[string][2]string{
		"/work":            {"/scratch/scalebox/pilot-<id>/slot-calc-<n>", "rw"},
		"/local_data_root": {"/scratch/scalebox/data/app-7", "rw"},
		"/app/bin":         {code, "ro"},
		"/vol":             {vol, "ro"},
		"/.scalebox/run":   {"/scratch/scalebox/pilot-<id>/run", "rw"},
	}, rows)

	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name, volume string
		want         []string
	}{
		{"missing volume source", missing + ":/vol", []string{"module calc", missing}},
		{"volume on /work", vol + ":/work", []string{"module calc", "/work", vol, "/scratch/scalebox/pilot-<id>/slot-calc-<n>"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &appspec.Module{Name: "calc", Volumes: []string{tc.volume}}
			var buf bytes.Buffer
			err := ExplainBinds(&buf, m, 7, ContainerConfig{}, "/scratch", "")
			for _, s := range tc.want {
				require.ErrorContains(t, err, s)
			}
			require.NotContains(t, err.Error(), "scalebox-explain-")
			require.Zero(t, buf.Len())
		})
	}
}
