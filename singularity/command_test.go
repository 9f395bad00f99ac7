package singularity

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/container"
)

func toolFor(flavour Flavour, v Version) *Tool {
	bin := "/usr/bin/singularity"
	if flavour == Apptainer {
		bin = "/usr/bin/apptainer"
	}
	return NewTool(bin, Info{Flavour: flavour, Version: v, Line: string(flavour) + " version " + v.String()}, nil)
}

func fullSpec() *container.Spec {
	return &container.Spec{
		Name:  "ignored",
		Image: "/images/app.sif",
		Binds: []container.Bind{
			{Source: "/scratch/work", Target: "/work", Why: "work dir"},
			{Source: "/data/in", Target: "/in", ReadOnly: true, Why: "input"},
		},
		Env:           []string{"A=1", "PATH_EXTRA=/opt/bin", "B=x=y,z"},
		Dir:           "/work",
		Argv:          []string{"/app/bin/run", "--n", "3"},
		GPU:           container.GPUNvidia,
		Network:       true,
		CleanEnv:      true,
		ContainAll:    true,
		WritableTmpfs: true,
		Flags:         []string{"--no-privs"},
	}
}

func TestCommandGolden(t *testing.T) {
	tests := []struct {
		name     string
		tool     *Tool
		wantArgv []string
		wantEnv  []string
	}{
		{
			name: "apptainer 1.3.4",
			tool: toolFor(Apptainer, V(1, 3, 4)),
			wantArgv: []string{"/usr/bin/apptainer", "exec",
				"--bind", "/scratch/work:/work", "--bind", "/data/in:/in:ro",
				"--no-eval", "--pwd", "/work", "--cleanenv", "--containall", "--writable-tmpfs", "--nv",
				"--no-privs", "/images/app.sif", "/app/bin/run", "--n", "3"},
			wantEnv: []string{"APPTAINERENV_A=1", "APPTAINERENV_PATH_EXTRA=/opt/bin", "APPTAINERENV_B=x=y,z"},
		},
		{
			name: "singularity-ce 3.9.0",
			tool: toolFor(SingularityCE, V(3, 9, 0)),
			wantArgv: []string{"/usr/bin/singularity", "exec",
				"--bind", "/scratch/work:/work", "--bind", "/data/in:/in:ro",
				"--pwd", "/work", "--cleanenv", "--containall", "--writable-tmpfs", "--nv",
				"--no-privs", "/images/app.sif", "/app/bin/run", "--n", "3"},
			wantEnv: []string{"SINGULARITYENV_A=1", "SINGULARITYENV_PATH_EXTRA=/opt/bin", "SINGULARITYENV_B=x=y,z"},
		},
		{
			name: "singularity-ce 4.1.0",
			tool: toolFor(SingularityCE, V(4, 1, 0)),
			wantArgv: []string{"/usr/bin/singularity", "exec",
				"--bind", "/scratch/work:/work", "--bind", "/data/in:/in:ro",
				"--no-eval", "--pwd", "/work", "--cleanenv", "--containall", "--writable-tmpfs", "--nv",
				"--no-privs", "/images/app.sif", "/app/bin/run", "--n", "3"},
			wantEnv: []string{"SINGULARITYENV_A=1", "SINGULARITYENV_PATH_EXTRA=/opt/bin", "SINGULARITYENV_B=x=y,z"},
		},
		{
			name: "singularity 3.8.7",
			tool: toolFor(Singularity, V(3, 8, 7)),
			wantArgv: []string{"/usr/bin/singularity", "exec",
				"--bind", "/scratch/work:/work", "--bind", "/data/in:/in:ro",
				"--pwd", "/work", "--cleanenv", "--containall", "--writable-tmpfs", "--nv",
				"--no-privs", "/images/app.sif", "/app/bin/run", "--n", "3"},
			wantEnv: []string{"SINGULARITYENV_A=1", "SINGULARITYENV_PATH_EXTRA=/opt/bin", "SINGULARITYENV_B=x=y,z"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, env, err := tt.tool.Command(fullSpec())
			require.NoError(t, err)
			require.Equal(t, tt.wantArgv, argv)
			require.Equal(t, tt.wantEnv, env)
			for _, kv := range env {
				require.True(t, strings.HasPrefix(kv, tt.tool.EnvPrefix()), kv)
			}
		})
	}
}

func TestCommandMinimal(t *testing.T) {
	// No env: no --no-eval, even where supported; nil env.
	argv, env, err := toolFor(Apptainer, V(1, 3, 4)).Command(&container.Spec{Image: "/i.sif", Argv: []string{"true"}})
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/bin/apptainer", "exec", "/i.sif", "true"}, argv)
	require.Nil(t, env)
}

func TestCommandAMD(t *testing.T) {
	spec := &container.Spec{Image: "/i.sif", Argv: []string{"true"}, GPU: container.GPUAMD}
	argv, _, err := toolFor(Apptainer, V(1, 3, 4)).Command(spec)
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/bin/apptainer", "exec", "--rocm", "/i.sif", "true"}, argv)

	_, _, err = toolFor(Singularity, V(3, 4, 2)).Command(spec)
	require.Error(t, err)
	require.Contains(t, err.Error(), "--rocm")
	require.Contains(t, err.Error(), "3.4.2")
}

func TestCommandEnvDuplicateLaterWins(t *testing.T) {
	spec := &container.Spec{Image: "/i.sif", Argv: []string{"true"}, Env: []string{"A=1", "B=2", "A=3"}}
	_, env, err := toolFor(Apptainer, V(1, 3, 4)).Command(spec)
	require.NoError(t, err)
	require.Equal(t, []string{"APPTAINERENV_A=3", "APPTAINERENV_B=2"}, env)
}

func TestCommandEnvSpecialWithNoEval(t *testing.T) {
	spec := &container.Spec{Image: "/i.sif", Argv: []string{"true"}, Env: []string{"P=$HOME `x` \\n\ttab"}}
	argv, env, err := toolFor(SingularityCE, V(3, 10, 0)).Command(spec)
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/bin/singularity", "exec", "--no-eval", "/i.sif", "true"}, argv)
	require.Equal(t, []string{"SINGULARITYENV_P=$HOME `x` \\n\ttab"}, env)
}

func TestCommandErrors(t *testing.T) {
	app := toolFor(Apptainer, V(1, 3, 4))
	ce39 := toolFor(SingularityCE, V(3, 9, 0))
	legacy := toolFor(Singularity, V(3, 8, 7))
	old := toolFor(Singularity, V(3, 4, 2))
	base := func(mod func(s *container.Spec)) *container.Spec {
		s := &container.Spec{Image: "/i.sif", Argv: []string{"true"}}
		mod(s)
		return s
	}
	tests := []struct {
		name    string
		tool    *Tool
		spec    *container.Spec
		message string // substring of the error
	}{
		{"nil spec", app, nil, "nil"},
		{"empty image", app, base(func(s *container.Spec) { s.Image = "" }), "no Image"},
		{"image is a flag", app, base(func(s *container.Spec) { s.Image = "--help" }), "starts with '-'"},
		{"no argv", app, base(func(s *container.Spec) { s.Argv = nil }), "no Argv"},
		{"empty argv0", app, base(func(s *container.Spec) { s.Argv = []string{""} }), "no Argv"},
		{"relative dir", app, base(func(s *container.Spec) { s.Dir = "work" }), "not absolute"},
		{"amd without rocm", old, base(func(s *container.Spec) { s.GPU = container.GPUAMD }), "--rocm"},
		{"unknown gpu", app, base(func(s *container.Spec) { s.GPU = "intel" }), `"intel"`},
		{"oci on apptainer", app, base(func(s *container.Spec) { s.Flags = []string{"--oci"} }), "--oci"},
		{"mount=x on legacy", legacy, base(func(s *container.Spec) { s.Flags = []string{"--mount=type=bind,src=/a,dst=/b"} }), "--mount"},
		{"unsquash on ce", ce39, base(func(s *container.Spec) { s.Flags = []string{"--unsquash"} }), "--unsquash"},
		{"no-eval flag on ce 3.9", ce39, base(func(s *container.Spec) { s.Flags = []string{"--no-eval"} }), "--no-eval"},
		{"dollar without no-eval ce", ce39, base(func(s *container.Spec) { s.Env = []string{"X=$HOME"} }), "'$'"},
		{"dollar without no-eval legacy", legacy, base(func(s *container.Spec) { s.Env = []string{"X=a$b"} }), "'$'"},
		{"backtick without no-eval", legacy, base(func(s *container.Spec) { s.Env = []string{"X=`id`"} }), "'`'"},
		{"backslash without no-eval", legacy, base(func(s *container.Spec) { s.Env = []string{`X=a\b`} }), `'\'`},
		{"control char without no-eval", legacy, base(func(s *container.Spec) { s.Env = []string{"X=a\nb"} }), "control character"},
		{"env on 3.4", old, base(func(s *container.Spec) { s.Env = []string{"X=1"} }), "environment"},
		{"env not K=V", app, base(func(s *container.Spec) { s.Env = []string{"NOEQUALS"} }), "NAME=VALUE"},
		{"env bad name", app, base(func(s *container.Spec) { s.Env = []string{"1X=1"} }), "shell variable name"},
		{"env reserved", app, base(func(s *container.Spec) { s.Env = []string{"HOME=/x"} }), "HOME"},
		{"env NUL", app, base(func(s *container.Spec) { s.Env = []string{"X=a\x00b"} }), "NUL"},
		{"env invalid utf8", app, base(func(s *container.Spec) { s.Env = []string{"X=\xff"} }), "UTF-8"},
		{"bind relative", app, base(func(s *container.Spec) { s.Binds = []container.Bind{{Source: "rel", Target: "/t"}} }), "not an absolute path"},
		{"bind empty target", app, base(func(s *container.Spec) { s.Binds = []container.Bind{{Source: "/s"}} }), "empty target"},
		{"bind colon", app, base(func(s *container.Spec) { s.Binds = []container.Bind{{Source: "/a:b", Target: "/t"}} }), "':' or ','"},
		{"bind comma", app, base(func(s *container.Spec) { s.Binds = []container.Bind{{Source: "/s", Target: "/t,u"}} }), "':' or ','"},
		{"bind space", app, base(func(s *container.Spec) { s.Binds = []container.Bind{{Source: "/s ", Target: "/t"}} }), "spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, env, err := tt.tool.Command(tt.spec)
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.message)
			require.Nil(t, argv)
			require.Nil(t, env)
		})
	}
}

func TestCommandGatedFlagsAllowed(t *testing.T) {
	spec := &container.Spec{Image: "/i.sif", Argv: []string{"true"}, Flags: []string{"--oci", "--keep-layers", "-u"}}
	argv, _, err := toolFor(SingularityCE, V(4, 1, 0)).Command(spec)
	require.NoError(t, err)
	require.Equal(t, []string{"/usr/bin/singularity", "exec", "--oci", "--keep-layers", "-u", "/i.sif", "true"}, argv)

	_, _, err = toolFor(SingularityCE, V(4, 0, 3)).Command(spec)
	require.ErrorContains(t, err, "--keep-layers")
}

func TestNoEvalOnlyWhereSupported(t *testing.T) {
	spec := &container.Spec{Image: "/i.sif", Argv: []string{"true"}, Env: []string{"A=1"}}
	for _, tc := range []struct {
		f    Flavour
		v    Version
		want bool
	}{
		{Apptainer, V(1, 0, 0), false},
		{Apptainer, Version{Major: 1, Minor: 1, Pre: "rc.1", Suffix: "-rc.1"}, false},
		{Apptainer, V(1, 1, 0), true},
		{SingularityCE, V(3, 9, 9), false},
		{SingularityCE, V(3, 10, 0), true},
		{Singularity, V(3, 8, 7), false},
	} {
		argv, _, err := toolFor(tc.f, tc.v).Command(spec)
		require.NoError(t, err)
		require.Equal(t, tc.want, contains(argv, "--no-eval"), "%s %s", tc.f, tc.v)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestToolAccessors(t *testing.T) {
	app := toolFor(Apptainer, V(1, 3, 4))
	require.Equal(t, "apptainer", app.Name())
	require.Equal(t, "APPTAINERENV_", app.EnvPrefix())
	require.Equal(t, "/usr/bin/apptainer", app.Path())
	ce := toolFor(SingularityCE, V(4, 1, 0))
	require.Equal(t, "singularity", ce.Name())
	require.Equal(t, "SINGULARITYENV_", ce.EnvPrefix())
	require.Equal(t, "SINGULARITYENV_", toolFor(Singularity, V(3, 8, 7)).EnvPrefix())
}

func TestStripContainerEnv(t *testing.T) {
	in := []string{"PATH=/bin", "APPTAINERENV_A=1", "SINGULARITYENV_B=2", "HOME=/h", "APPTAINER_BINDPATH=/x"}
	require.Equal(t, []string{"PATH=/bin", "HOME=/h", "APPTAINER_BINDPATH=/x"}, StripContainerEnv(in))
}
