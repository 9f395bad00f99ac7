package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/container/containertest"
)

func ociSpec() *Spec {
	return &Spec{
		Name:  "sb-calc-1",
		Image: "localhost/app:1",
		Binds: []Bind{
			{Source: "/scratch/work", Target: "/work", Why: "work dir"},
			{Source: "/data/in", Target: "/in", ReadOnly: true, Why: "input"},
		},
		Env:  []string{"A=1", "B=x=y,z", "C=$HOME \"q\" 'x'\n\tend"},
		Dir:  "/work",
		Argv: []string{"/app/bin/run", "--n", "3"},
	}
}

func TestNewOCI(t *testing.T) {
	o, err := NewOCI("podman", "/usr/bin/podman")
	require.NoError(t, err)
	require.Equal(t, "podman", o.Name())
	o, err = NewOCI("docker", "")
	require.NoError(t, err)
	require.Equal(t, "docker", o.Name())
	_, err = NewOCI("apptainer", "")
	require.EqualError(t, err, `OCI engine flavor "apptainer" is not "podman" or "docker"`)
	_, _, err = (&OCI{Flavor: "Podman"}).Command(ociSpec())
	require.EqualError(t, err, `OCI engine flavor "Podman" is not "podman" or "docker"`)
}

func TestOCICommandGolden(t *testing.T) {
	podman := &OCI{Flavor: FlavorPodman, Path: "/usr/bin/podman"}
	docker := &OCI{Flavor: FlavorDocker} // Path "" = looked up on PATH
	common := []string{
		"--workdir", "/work",
		"-v", "/scratch/work:/work", "-v", "/data/in:/in:ro",
		"--env", "A=1", "--env", "B=x=y,z", "--env", "C=$HOME \"q\" 'x'\n\tend",
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tail := []string{"localhost/app:1", "/app/bin/run", "--n", "3"}

	tests := []struct {
		name   string
		engine *OCI
		edit   func(s *Spec)
		want   []string
	}{
		{
			name:   "podman no network",
			engine: podman,
			want:   cat([]string{"/usr/bin/podman", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common, tail),
		},
		{
			name:   "docker no network",
			engine: docker,
			want:   cat([]string{"docker", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common, tail),
		},
		{
			name:   "podman host network, stdin, flags",
			engine: podman,
			edit: func(s *Spec) {
				s.Network, s.Stdin = true, true
				s.Flags = []string{"--pull=never", "--userns=keep-id"}
			},
			want: cat([]string{"/usr/bin/podman", "run", "--rm", "-i", "--name", "sb-calc-1", "--network=host"}, common,
				[]string{"--pull=never", "--userns=keep-id"}, tail),
		},
		{
			name:   "docker host network, stdin",
			engine: docker,
			edit:   func(s *Spec) { s.Network, s.Stdin = true, true },
			want:   cat([]string{"docker", "run", "--rm", "-i", "--name", "sb-calc-1", "--network=host"}, common, tail),
		},
		{
			name:   "podman nvidia is CDI",
			engine: podman,
			edit:   func(s *Spec) { s.GPU = GPUNvidia },
			want: cat([]string{"/usr/bin/podman", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common,
				[]string{"--device", "nvidia.com/gpu=all"}, tail),
		},
		{
			name:   "docker nvidia is --gpus",
			engine: docker,
			edit:   func(s *Spec) { s.GPU = GPUNvidia },
			want: cat([]string{"docker", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common,
				[]string{"--gpus", "all"}, tail),
		},
		{
			name:   "podman amd",
			engine: podman,
			edit:   func(s *Spec) { s.GPU = GPUAMD; s.Flags = []string{"--group-add", "video"} },
			want: cat([]string{"/usr/bin/podman", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common,
				[]string{"--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video"}, tail),
		},
		{
			name:   "docker amd",
			engine: docker,
			edit:   func(s *Spec) { s.GPU = GPUAMD },
			want: cat([]string{"docker", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common,
				[]string{"--device", "/dev/kfd", "--device", "/dev/dri"}, tail),
		},
		{
			name:   "apptainer notions are ignored",
			engine: podman,
			edit:   func(s *Spec) { s.CleanEnv, s.ContainAll, s.WritableTmpfs = true, true, true },
			want:   cat([]string{"/usr/bin/podman", "run", "--rm", "--name", "sb-calc-1", "--network=none"}, common, tail),
		},
		{
			name:   "minimal: no name, dir, binds or env",
			engine: podman,
			edit: func(s *Spec) {
				s.Name, s.Dir, s.Binds, s.Env = "", "", nil, nil
				s.Image = "sha256:0123abcd"
				s.Argv = []string{"true"}
			},
			want: []string{"/usr/bin/podman", "run", "--rm", "--network=none", "sha256:0123abcd", "true"},
		},
		{
			name:   "a later env entry replaces an earlier one in place",
			engine: docker,
			edit: func(s *Spec) {
				s.Name, s.Dir, s.Binds = "", "", nil
				s.Env = []string{"A=1", "B=2", "A=3", "E="}
			},
			want: cat([]string{"docker", "run", "--rm", "--network=none", "--env", "A=3", "--env", "B=2", "--env", "E="}, tail),
		},
		{
			name:   "one-character podman name",
			engine: podman,
			edit:   func(s *Spec) { s.Name, s.Dir, s.Binds, s.Env = "a", "", nil, nil },
			want:   cat([]string{"/usr/bin/podman", "run", "--rm", "--name", "a", "--network=none"}, tail),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ociSpec()
			if tt.edit != nil {
				tt.edit(s)
			}
			argv, env, err := tt.engine.Command(s)
			require.NoError(t, err)
			require.Equal(t, tt.want, argv)
			require.Nil(t, env)
		})
	}
}

func TestOCICommandRefused(t *testing.T) {
	tests := []struct {
		name   string
		flavor string
		edit   func(s *Spec)
		want   string // the whole error message
	}{
		{"no image", FlavorPodman, func(s *Spec) { s.Image = "" },
			`container spec has no Image: give an image reference or ID for podman`},
		{"image like a flag", FlavorDocker, func(s *Spec) { s.Image = "--privileged" },
			`container image "--privileged" starts with '-' and would be read as a flag`},
		{"no argv", FlavorPodman, func(s *Spec) { s.Argv = nil },
			`container spec for localhost/app:1 has no Argv: give the program to run`},
		{"empty program", FlavorPodman, func(s *Spec) { s.Argv = []string{"", "x"} },
			`container spec for localhost/app:1 has no Argv: give the program to run`},
		{"relative dir", FlavorPodman, func(s *Spec) { s.Dir = "work" },
			`container working directory "work" is not absolute`},
		{"bad name", FlavorPodman, func(s *Spec) { s.Name = "-rm" },
			`container name "-rm" is not valid for podman: use letters, digits, '_', '.' and '-', starting with a letter or digit`},
		{"name with slash", FlavorPodman, func(s *Spec) { s.Name = "a/b" },
			`container name "a/b" is not valid for podman: use letters, digits, '_', '.' and '-', starting with a letter or digit`},
		{"one-character docker name", FlavorDocker, func(s *Spec) { s.Name = "a" },
			`container name "a" is not valid for docker: use letters, digits, '_', '.' and '-', starting with a letter or digit`},
		{"source with colon", FlavorPodman, func(s *Spec) { s.Binds[1].Source = "/data/run:2" },
			`bind input: source "/data/run:2" contains ':' or ',', which podman -v splits on: rename the directory or bind a parent`},
		{"target with comma", FlavorDocker, func(s *Spec) { s.Binds[0].Target = "/work,x" },
			`bind work dir: target "/work,x" contains ':' or ',', which docker -v splits on: rename the directory or bind a parent`},
		{"relative source (a named volume)", FlavorPodman, func(s *Spec) { s.Binds[0].Source = "scratch" },
			`bind work dir: source "scratch" is not an absolute path`},
		{"relative target", FlavorPodman, func(s *Spec) { s.Binds[1].Target = "in" },
			`bind input: target "in" is not an absolute path`},
		{"empty source, no why", FlavorPodman, func(s *Spec) { s.Binds = append(s.Binds, Bind{Target: "/x"}) },
			`bind bind[2]: empty source path`},
		{"empty target", FlavorDocker, func(s *Spec) { s.Binds[0].Target = "" },
			`bind work dir: empty target path`},
		{"NUL in source", FlavorPodman, func(s *Spec) { s.Binds[0].Source = "/a\x00b" },
			`bind work dir: source "/a\x00b" contains a NUL byte`},
		{"env without =", FlavorPodman, func(s *Spec) { s.Env = []string{"HOME"} },
			`container env entry "HOME" is not NAME=VALUE`},
		{"env glob name", FlavorPodman, func(s *Spec) { s.Env = []string{"SECRET*=x"} },
			`container env name "SECRET*" is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)`},
		{"env empty name", FlavorDocker, func(s *Spec) { s.Env = []string{"=x"} },
			`container env name "" is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)`},
		{"env name starting with a digit", FlavorDocker, func(s *Spec) { s.Env = []string{"1A=x"} },
			`container env name "1A" is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)`},
		{"env NUL", FlavorPodman, func(s *Spec) { s.Env = []string{"A=x\x00y"} },
			`container env A contains a NUL byte`},
		{"unknown GPU", FlavorPodman, func(s *Spec) { s.GPU = "intel" },
			`container GPU "intel" is not one of "", "nvidia", "amd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ociSpec()
			tt.edit(s)
			argv, env, err := (&OCI{Flavor: tt.flavor}).Command(s)
			require.EqualError(t, err, tt.want)
			require.Nil(t, argv)
			require.Nil(t, env)
		})
	}
	_, _, err := (&OCI{Flavor: FlavorPodman}).Command(nil)
	require.EqualError(t, err, "container spec is nil")
}

func TestOCIRemoveArgv(t *testing.T) {
	require.Equal(t, []string{"/usr/bin/podman", "rm", "-f", "--time", "0", "--ignore", "sb-1"},
		(&OCI{Flavor: FlavorPodman, Path: "/usr/bin/podman"}).RemoveArgv("sb-1"))
	require.Equal(t, []string{"docker", "rm", "-f", "sb-1"}, (&OCI{Flavor: FlavorDocker}).RemoveArgv("sb-1"))
	require.EqualError(t, (&OCI{Flavor: FlavorPodman}).Remove(context.Background(), "-a"), `remove container: bad name "-a"`)
	require.EqualError(t, (&OCI{Flavor: FlavorPodman}).Remove(context.Background(), ""), `remove container: bad name ""`)
}

// TestOCIRemoveReportsFailure runs Remove against fake clients.
func TestOCIRemoveFakeClient(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755))
		return p
	}
	ok := script("ok", `[ "$*" = "rm -f --time 0 --ignore c1" ] || exit 9`)
	require.NoError(t, (&OCI{Flavor: FlavorPodman, Path: ok}).Remove(context.Background(), "c1"))

	missing := script("missing", `echo "Error: No such container: c1" >&2; exit 1`)
	require.NoError(t, (&OCI{Flavor: FlavorDocker, Path: missing}).Remove(context.Background(), "c1"))

	broken := script("broken", `echo "Error response from daemon: cannot kill" >&2; exit 1`)
	err := (&OCI{Flavor: FlavorDocker, Path: broken}).Remove(context.Background(), "c1")
	require.EqualError(t, err, broken+" rm -f c1: exit status 1: Error response from daemon: cannot kill")

	env := script("env", `[ "$SCALEBOX_FAKE" = yes ] || exit 7`)
	require.Error(t, (&OCI{Flavor: FlavorPodman, Path: env}).Remove(context.Background(), "c1"))
	require.NoError(t, (&OCI{Flavor: FlavorPodman, Path: env, Env: []string{"SCALEBOX_FAKE=yes"}}).Remove(context.Background(), "c1"))
}

// podmanSetup builds the test image and returns the engine and the image.
func podmanSetup(t *testing.T) (*OCI, string) {
	t.Helper()
	containertest.Podman(t)
	root := containertest.Rootfs(t)
	start := time.Now()
	img := containertest.PodmanImage(t, root)
	t.Logf("image %s ready in %v", img, time.Since(start).Round(time.Millisecond))
	bin, err := exec.LookPath("podman")
	require.NoError(t, err)
	o, err := NewOCI(FlavorPodman, bin)
	require.NoError(t, err)
	return o, img
}

// runOCI runs s with the engine in the foreground and returns its stdout,
// stderr and exit code.
func runOCI(t *testing.T, o *OCI, s *Spec, stdin io.Reader) (string, string, int) {
	t.Helper()
	argv, env, err := o.Command(s)
	require.NoError(t, err)
	require.Nil(t, env)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	t.Logf("podman run %s: %v", strings.Join(s.Argv, " "), time.Since(start).Round(time.Millisecond))
	code := 0
	if err != nil {
		var ee *exec.ExitError
		require.True(t, errors.As(err, &ee), "podman run: %v\n%s", err, stderr.String())
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code
}

// TestPodmanRunsInImage runs real containers with podman (root, podman
// and runc required; otherwise skipped). Not parallel: containertest.Podman
// sets CONTAINERS_CONF for the test.
func TestPodmanRunsInImage(t *testing.T) {
	o, img := podmanSetup(t)

	in := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(in, "x"), []byte("input line\n"), 0o644))
	work := t.TempDir()
	weird := "a b,c=d $HOME \"q\" 'x' `id`\n\tline2 ünï"
	spec := func(argv ...string) *Spec {
		return &Spec{
			Name:  fmt.Sprintf("scalebox-test-%d", os.Getpid()),
			Image: img,
			Binds: []Bind{
				{Source: work, Target: "/work", Why: "work dir"},
				{Source: in, Target: "/in", ReadOnly: true, Why: "input"},
			},
			Env:  []string{"FOO=bar", "WEIRD=" + weird},
			Dir:  "/work",
			Argv: argv,
		}
	}

	t.Run("output, binds, env", func(t *testing.T) {
		out, stderr, code := runOCI(t, o, spec("bash", "-c", `echo $FOO; cat /in/x; awk "BEGIN{print 6*7}"; pwd`), nil)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, "bar\ninput line\n42\n/work\n", out)
	})
	t.Run("env values arrive verbatim", func(t *testing.T) {
		out, stderr, code := runOCI(t, o, spec("bash", "-c", `printf %s "$WEIRD"`), nil)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, weird, out)
	})
	t.Run("exit code propagates", func(t *testing.T) {
		_, _, code := runOCI(t, o, spec("bash", "-c", "echo to stderr >&2; exit 3"), nil)
		require.Equal(t, 3, code)
	})
	t.Run("writes to /work reach the host, /in is read-only", func(t *testing.T) {
		out, stderr, code := runOCI(t, o, spec("bash", "-c", `echo result > /work/out.txt && echo x > /in/y 2>/dev/null; echo rc=$?`), nil)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, "rc=1\n", out)
		b, err := os.ReadFile(filepath.Join(work, "out.txt"))
		require.NoError(t, err)
		require.Equal(t, "result\n", string(b))
		_, err = os.Stat(filepath.Join(in, "y"))
		require.ErrorIs(t, err, os.ErrNotExist)
	})
	t.Run("no network but loopback", func(t *testing.T) {
		out, stderr, code := runOCI(t, o, spec("ls", "/sys/class/net"), nil)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, "lo\n", out)
	})
	t.Run("stdin only with Stdin", func(t *testing.T) {
		s := spec("cat")
		s.Stdin = true
		out, stderr, code := runOCI(t, o, s, strings.NewReader("via stdin\n"))
		require.Equal(t, 0, code, stderr)
		require.Equal(t, "via stdin\n", out)

		out, stderr, code = runOCI(t, o, spec("cat"), strings.NewReader("via stdin\n"))
		require.Equal(t, 0, code, stderr)
		require.Equal(t, "", out)
	})
	t.Run("host env does not leak", func(t *testing.T) {
		t.Setenv("SCALEBOX_HOST_ONLY", "leak")
		out, stderr, code := runOCI(t, o, spec("bash", "-c", `echo "[${SCALEBOX_HOST_ONLY-}]"`), nil)
		require.Equal(t, 0, code, stderr)
		require.Equal(t, "[]\n", out)
	})
}

// TestPodmanRemoveStopsContainer shows why the pilot removes containers by
// name: killing the client leaves the container running; Remove stops it.
func TestPodmanRemoveStopsContainer(t *testing.T) {
	o, img := podmanSetup(t)
	name := fmt.Sprintf("scalebox-test-rm-%d", os.Getpid())
	t.Cleanup(func() { _ = o.Remove(context.Background(), name) })
	argv, _, err := o.Command(&Spec{Name: name, Image: img, Argv: []string{"bash", "-c", "echo ready; exec sleep 1000"}})
	require.NoError(t, err)
	cmd := exec.Command(argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	require.NoError(t, cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Wait() // stderr is complete only after Wait
		t.Fatalf("read the container's first line: %v\n%s", err, stderr.String())
	}
	require.Equal(t, "ready\n", line)
	t.Logf("podman run to first output: %v", time.Since(start).Round(time.Millisecond))

	// Kill the client: the container goes on.
	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	state, err := exec.Command(o.Path, "inspect", "--format", "{{.State.Status}}", name).CombinedOutput()
	require.NoError(t, err, string(state))
	require.Equal(t, "running", strings.TrimSpace(string(state)))

	start = time.Now()
	require.NoError(t, o.Remove(context.Background(), name))
	t.Logf("podman rm -f --time 0: %v", time.Since(start).Round(time.Millisecond))
	out, err := exec.Command(o.Path, "container", "exists", name).CombinedOutput()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "container still exists: %v %s", err, out)
	require.Equal(t, 1, ee.ExitCode())

	// Removing a missing container is not an error.
	require.NoError(t, o.Remove(context.Background(), name))
}
