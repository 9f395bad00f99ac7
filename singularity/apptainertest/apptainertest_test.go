package apptainertest_test

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/singularity"
	"github.com/scalebox-hpc/scalebox/singularity/apptainertest"
	"github.com/scalebox-hpc/scalebox/singularity/siftest"
)

// busyboxRootfs makes a root file system holding a static busybox and its
// applet links in /bin, plus files.
func busyboxRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not found: apt-get install busybox-static")
	}
	if f, err := elf.Open(bb); err != nil {
		t.Skipf("%s is not an ELF file: %v", bb, err)
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				_ = f.Close()
				t.Skipf("%s is dynamically linked: apt-get install busybox-static", bb)
			}
		}
		_ = f.Close()
	}
	root := siftest.Rootfs(t, files)
	b, err := os.ReadFile(bb)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755))
	out, err := exec.Command(bb, "--list").Output()
	require.NoError(t, err)
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" {
			continue
		}
		link := filepath.Join(root, "bin", applet)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		require.NoError(t, os.Symlink("busybox", link))
	}
	return root
}

// busyboxSIF builds a SIF image of busyboxRootfs.
func busyboxSIF(t *testing.T, files map[string]string, opts ...siftest.Option) string {
	t.Helper()
	return siftest.BuildSIF(t, busyboxRootfs(t, files), opts...)
}

// result is what a run of the double produced.
type result struct {
	code           int
	stdout, stderr string
}

// runTool runs argv with env added to the test's environment (minus
// APPTAINERENV_/SINGULARITYENV_ variables), as an executor would.
func runTool(t *testing.T, dir string, stdin io.Reader, env []string, argv ...string) result {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(singularity.StripContainerEnv(os.Environ()), env...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		require.NoError(t, err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

func detect(t *testing.T) *singularity.Tool {
	t.Helper()
	tool, err := singularity.Detect(context.Background(), singularity.Config{})
	require.NoError(t, err)
	return tool
}

func TestVersionAcceptedByDetect(t *testing.T) {
	ctx := context.Background()
	bin := apptainertest.Install(t, apptainertest.Apptainer)

	tool, err := singularity.Detect(ctx, singularity.Config{})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(bin, "apptainer"), tool.Path())
	require.Equal(t, singularity.Apptainer, tool.Info().Flavour)
	require.Equal(t, singularity.V(1, 3, 4), tool.Info().Version)
	require.Equal(t, "apptainer", tool.Name())

	// Apptainer's singularity compatibility link is still Apptainer.
	tool, err = singularity.Detect(ctx, singularity.Config{Path: filepath.Join(bin, "singularity")})
	require.NoError(t, err)
	require.Equal(t, singularity.Apptainer, tool.Info().Flavour)

	out, err := exec.Command(filepath.Join(bin, "apptainer"), "version").Output()
	require.NoError(t, err)
	require.Equal(t, "1.3.4\n", string(out))
}

func TestVersionSingularityCE(t *testing.T) {
	bin := apptainertest.Install(t, apptainertest.SingularityCE)
	tool, err := singularity.Detect(context.Background(), singularity.Config{})
	require.NoError(t, err)
	require.Equal(t, filepath.Join(bin, "singularity"), tool.Path())
	require.Equal(t, singularity.SingularityCE, tool.Info().Flavour)
	require.Equal(t, singularity.V(4, 1, 0), tool.Info().Version)
	require.Equal(t, "singularity", tool.Name())
}

// TestExecSpec runs the argv and environment that singularity.Tool.Command
// renders for a container.Spec.
func TestExecSpec(t *testing.T) {
	for _, flavor := range []string{apptainertest.Apptainer, apptainertest.SingularityCE} {
		t.Run(flavor, func(t *testing.T) {
			apptainertest.Install(t, flavor)
			img := busyboxSIF(t, nil)
			tool := detect(t)

			in := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(in, "f"), []byte("input data\n"), 0o644))
			work := t.TempDir()
			spec := &container.Spec{
				Image: img,
				Binds: []container.Bind{
					{Source: in, Target: "/in", ReadOnly: true, Why: "inputs"},
					{Source: work, Target: "/work/task", Why: "work dir"},
				},
				Env:  []string{"GREETING=hello $USER `x` \\n, a=b", "EMPTY="},
				Dir:  "/work/task",
				Argv: []string{"sh", "-c", `echo hi; cat /in/f; pwd; echo "$GREETING"; echo "empty=[$EMPTY]"; echo out > result; exit 3`},
			}
			argv, env, err := tool.Command(spec)
			require.NoError(t, err)
			require.Contains(t, argv, "--no-eval")

			start := time.Now()
			r := runTool(t, "/", nil, env, argv...)
			t.Logf("first exec (with extraction): %v", time.Since(start))
			require.Equal(t, 3, r.code, "stderr: %s", r.stderr)
			require.Equal(t, "hi\ninput data\n/work/task\nhello $USER `x` \\n, a=b\nempty=[]\n", r.stdout)
			b, err := os.ReadFile(filepath.Join(work, "result"))
			require.NoError(t, err)
			require.Equal(t, "out\n", string(b))

			// A read-only bind cannot be written; neither can the image.
			spec.Argv = []string{"sh", "-c", "echo x > /in/f"}
			argv, env, err = tool.Command(spec)
			require.NoError(t, err)
			r = runTool(t, "/", nil, env, argv...)
			require.NotEqual(t, 0, r.code)
			require.Contains(t, r.stderr, "Read-only file system")
			b, err = os.ReadFile(filepath.Join(in, "f"))
			require.NoError(t, err)
			require.Equal(t, "input data\n", string(b))

			spec.Argv = []string{"touch", "/newfile"}
			argv, env, err = tool.Command(spec)
			require.NoError(t, err)
			r = runTool(t, "/", nil, env, argv...)
			require.NotEqual(t, 0, r.code)
			require.Contains(t, r.stderr, "Read-only file system")

			// Per-exec cost once the image is extracted.
			spec.Argv = []string{"true"}
			argv, env, err = tool.Command(spec)
			require.NoError(t, err)
			const n = 10
			start = time.Now()
			for range n {
				r = runTool(t, "/", nil, env, argv...)
				require.Equal(t, 0, r.code, r.stderr)
			}
			t.Logf("%s exec of true, image cached: %v per exec", flavor, time.Since(start)/n)
			require.Len(t, apptainertest.Extractions(t), 1)
		})
	}
}

func TestWritableTmpfsIsDiscarded(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	tool := detect(t)
	spec := &container.Spec{Image: img, WritableTmpfs: true, Argv: []string{"sh", "-c", "test ! -e /newfile && touch /newfile && echo made"}}
	for range 2 {
		argv, env, err := tool.Command(spec)
		require.NoError(t, err)
		r := runTool(t, "/", nil, env, argv...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, "made\n", r.stdout)
	}
}

func TestEnvironment(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	t.Setenv("HOST_ONLY", "from host")
	t.Setenv("LD_LIBRARY_PATH", "/host/lib")
	t.Setenv("TERM", "xterm-test")

	show := []string{"sh", "-c", `echo "path=$PATH"; echo "host=$HOST_ONLY"; echo "ld=$LD_LIBRARY_PATH"; echo "k=$K"; echo "term=$TERM"; echo "home=$HOME"; echo "c=$APPTAINER_CONTAINER"`}
	r := runTool(t, "/", nil, []string{"APPTAINERENV_K=from prefix", "HOST_ONLY=from host"}, append([]string{"apptainer", "exec", img}, show...)...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nhost=from host\nld=/.singularity.d/libs\nk=from prefix\nterm=xterm-test\nhome=/root\nc="+img+"\n", r.stdout)

	// --env beats APPTAINERENV_; --cleanenv drops the host's variables
	// but keeps TERM; APPTAINERENV_PATH sets PATH.
	r = runTool(t, "/", nil, []string{"APPTAINERENV_K=from prefix", "APPTAINERENV_PATH=/bin"},
		append([]string{"apptainer", "exec", "--cleanenv", "--env", "K=from flag", img}, show...)...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "path=/bin\nhost=\nld=/.singularity.d/libs\nk=from flag\nterm=xterm-test\nhome=/root\nc="+img+"\n", r.stdout)

	// Without --no-eval the real tool would expand '$': the double refuses.
	r = runTool(t, "/", nil, []string{"APPTAINERENV_K=$HOME"}, "apptainer", "exec", img, "true")
	require.Equal(t, 255, r.code)
	require.Contains(t, r.stderr, "--no-eval")

	// --env is pflag's stringToString, as in the real tool.
	r = runTool(t, "/", nil, nil, "apptainer", "exec", "--env", "A=1,B=2", img, "sh", "-c", `echo "$A/$B"`)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "1/2\n", r.stdout)
}

func TestWorkingDirectory(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	// The host's current directory is mounted and entered by default.
	cwd := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(cwd, "here"), []byte("x"), 0o644))
	r := runTool(t, cwd, nil, nil, "apptainer", "exec", img, "sh", "-c", "pwd; ls")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, cwd+"\nhere\n", r.stdout)

	r = runTool(t, cwd, nil, nil, "apptainer", "exec", "--pwd", "/etc", img, "pwd")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "/etc\n", r.stdout)

	// --containall: no cwd mount, starts in $HOME, PID 1 is the shim.
	r = runTool(t, cwd, nil, nil, "apptainer", "exec", "--containall", img, "sh", "-c", "pwd; test -e "+cwd+" || echo nocwd; cat /proc/1/cmdline | tr '\\0' ' '")
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, strings.HasPrefix(r.stdout, "/root\nnocwd\n"), r.stdout)
	require.Contains(t, r.stdout, "__apptainertest_shim")
}

func TestExitStatus(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	for _, tc := range []struct {
		argv []string
		code int
	}{
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{[]string{"--containall", img, "sh", "-c", "kill -TERM $$"}, 128 + 15},
	} {
		args := append([]string{"apptainer", "exec"}, tc.argv...)
		if tc.argv[0] != "--containall" {
			args = append([]string{"apptainer", "exec", img}, tc.argv...)
		}
		r := runTool(t, "/", nil, nil, args...)
		require.Equal(t, tc.code, r.code, "%v: %s", tc.argv, r.stderr)
	}
}

func TestErrors(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)

	r := runTool(t, "/", nil, nil, "apptainer", "exec", "--bind", "/no/such/dir:/data", img, "true")
	require.Equal(t, 255, r.code)
	require.Equal(t, "FATAL:   container creation failed: mount hook function failure: mount /no/such/dir->/data error: while mounting /no/such/dir: mount source /no/such/dir doesn't exist\n", r.stderr)

	// As the real tool (cobra via ExecuteApptainer): usage error, exit 1.
	r = runTool(t, "/", nil, nil, "apptainer", "exec", "--xyz", img, "true")
	require.Equal(t, 1, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "Error for command \"exec\": unknown flag: --xyz\n"), r.stderr)

	r = runTool(t, "/", nil, nil, "apptainer", "exec", img)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "requires at least 2 arg(s), only received 1")

	r = runTool(t, "/", nil, nil, "apptainer", "exec", img, "no-such-command")
	require.Equal(t, 255, r.code)
	require.Equal(t, "FATAL:   \"no-such-command\": executable file not found in $PATH\n", r.stderr)

	for _, how := range []siftest.Corruption{siftest.BadMagic, siftest.HeaderOnly, siftest.BadSquashfs, siftest.Truncated, siftest.BadDescriptorCount, siftest.BadPartitionOffset} {
		bad := siftest.Corrupt(t, img, how)
		r = runTool(t, "/", nil, nil, "apptainer", "exec", bad, "true")
		require.Equal(t, 255, r.code, "corruption %d: %s", how, r.stderr)
		require.True(t, strings.HasPrefix(r.stderr, "FATAL:   "), r.stderr)
	}
	bad := siftest.Corrupt(t, img, siftest.BadMagic)
	r = runTool(t, "/", nil, nil, "apptainer", "exec", bad, "true")
	require.Equal(t, "FATAL:   could not open image "+bad+": image format not recognized\n", r.stderr)

	other := busyboxSIF(t, nil, siftest.WithArch(siftest.OtherArch()))
	r = runTool(t, "/", nil, nil, "apptainer", "exec", other, "true")
	require.Equal(t, 255, r.code)
	require.Contains(t, r.stderr, "could not open image "+other+": the image's architecture ("+siftest.OtherArch()+") could not run on the host's")

	missing := filepath.Join(t.TempDir(), "no-such.sif")
	r = runTool(t, "/", nil, nil, "apptainer", "exec", missing, "true")
	require.Equal(t, 255, r.code)
	require.Equal(t, "FATAL:   could not open image "+missing+": failed to retrieve path for "+missing+": lstat "+missing+": no such file or directory\n", r.stderr)

	r = runTool(t, "/", nil, nil, "apptainer", "exec", "--nv", img, "true")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "WARNING: Could not find any nv libraries on this host!")
}

func TestStdinPassedThrough(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	cmd := exec.Command("apptainer", "exec", img, "sh", "-c", `while read -r l; do echo "got $l"; done; echo eof`)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	for _, w := range []string{"one", "two"} {
		_, err := io.WriteString(stdin, w+"\n")
		require.NoError(t, err)
		require.True(t, lines.Scan())
		require.Equal(t, "got "+w, lines.Text())
	}
	require.NoError(t, stdin.Close())
	require.True(t, lines.Scan())
	require.Equal(t, "eof", lines.Text())
	require.NoError(t, cmd.Wait())
}

// TestSIGTERMToProcessGroup signals the double's process group as an
// executor does and expects the command to end promptly with 128+SIGTERM.
// (Not with --pid --no-init: there the command is PID 1 of its namespace
// and, like under the real tool, ignores signals it has no handler for.)
func TestSIGTERMToProcessGroup(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	for _, flags := range [][]string{nil, {"--containall"}, {"--pid"}} {
		t.Run(strings.Join(append([]string{"exec"}, flags...), " "), func(t *testing.T) {
			args := append(append([]string{"exec"}, flags...), img, "sh", "-c", "echo ready; exec sleep 1000")
			cmd := exec.Command("apptainer", args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			var stderr testenv.Buffer
			cmd.Stderr = &stderr
			require.NoError(t, cmd.Start())
			lines := bufio.NewScanner(stdout)
			require.True(t, lines.Scan(), stderr.String())
			require.Equal(t, "ready", lines.Text())

			start := time.Now()
			require.NoError(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM))
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				t.Fatal("the double did not end within 30s of SIGTERM")
			}
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			require.Equal(t, 143, ee.ExitCode(), stderr.String())
			t.Logf("ended %v after SIGTERM", time.Since(start))
		})
	}
	// The same through cmd.Process.Signal (the double's own PID only).
	cmd := exec.Command("apptainer", "exec", img, "sh", "-c", "echo ready; exec sleep 1000")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	require.True(t, lines.Scan())
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	var ee *exec.ExitError
	require.ErrorAs(t, cmd.Wait(), &ee)
	require.Equal(t, 143, ee.ExitCode())
}

func TestConcurrentFirstRunsShareOneExtraction(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	const n = 6
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("apptainer", "exec", img, "cat", "/etc/passwd")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run()
			results[i] = result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
		}()
	}
	wg.Wait()
	for _, r := range results {
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, "root:x:0:0:root:/root:/bin/sh\n", r.stdout)
	}
	require.Len(t, apptainertest.Extractions(t), 1)
}

func TestSandboxAndRunscript(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	root := busyboxRootfs(t, map[string]string{".singularity.d/runscript": "#!/bin/sh\necho \"run $*\"\n"})
	require.NoError(t, os.Chmod(filepath.Join(root, ".singularity.d/runscript"), 0o755))
	r := runTool(t, "/", nil, nil, "apptainer", "exec", root, "cat", "/etc/group")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "root:x:0:\n", r.stdout)
	require.Empty(t, apptainertest.Extractions(t), "a sandbox is used in place")

	img := siftest.BuildSIF(t, root)
	r = runTool(t, "/", nil, nil, "apptainer", "run", img, "a", "b")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "run a b\n", r.stdout)
}

func TestPull(t *testing.T) {
	ctx := context.Background()
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil, siftest.WithLabels(map[string]string{"app": "primes"}))
	const ref = "docker://alpine:3.19"
	require.Equal(t, "docker_alpine_3.19.sif", apptainertest.RegistryName(ref))
	apptainertest.Registry(t, ref, img)
	tool := detect(t)

	dest := filepath.Join(t.TempDir(), "alpine.sif")
	require.NoError(t, tool.Pull(ctx, dest, ref))
	want, err := os.ReadFile(img)
	require.NoError(t, err)
	got, err := os.ReadFile(dest)
	require.NoError(t, err)
	require.Equal(t, want, got)
	info, err := singularity.Inspect(dest)
	require.NoError(t, err)
	require.Equal(t, "primes", info.Labels["app"])

	// The real tool refuses to overwrite unless --force.
	err = tool.Pull(ctx, dest, ref)
	require.Error(t, err)
	r := runTool(t, "/", nil, nil, "apptainer", "pull", dest, ref)
	require.Equal(t, 255, r.code)
	require.Equal(t, "FATAL:   Image file already exists: \""+dest+"\" - will not overwrite\n", r.stderr)
	r = runTool(t, "/", nil, nil, "apptainer", "pull", "--force", dest, ref)
	require.Equal(t, 0, r.code, r.stderr)

	// Default output name, and exec of the reference itself.
	dir := t.TempDir()
	r = runTool(t, dir, nil, nil, "apptainer", "pull", ref)
	require.Equal(t, 0, r.code, r.stderr)
	require.FileExists(t, filepath.Join(dir, "alpine_3.19.sif"))
	r = runTool(t, "/", nil, nil, "apptainer", "exec", ref, "echo", "from ref")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "from ref\n", r.stdout)

	// Not in the registry: fails as the real tool does offline.
	missing := filepath.Join(t.TempDir(), "x.sif")
	err = tool.Pull(ctx, missing, "docker://example.org/team/tool:1.0")
	require.Error(t, err)
	r = runTool(t, "/", nil, nil, "apptainer", "pull", missing, "docker://example.org/team/tool:1.0")
	require.Equal(t, 255, r.code)
	require.True(t, strings.HasPrefix(r.stderr, "FATAL:   While making image from oci registry: error fetching image to cache: "), r.stderr)
	require.Contains(t, r.stderr, "dial tcp: lookup example.org: no such host")
	require.NoFileExists(t, missing)

	// The product's cache stages references through Tool.Pull.
	cache, err := singularity.NewCache(t.TempDir(), 0, tool)
	require.NoError(t, err)
	st, err := cache.Stage(ctx, ref)
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Release() })
	require.Equal(t, singularity.KindDocker, st.Kind)

	r = runTool(t, "/", nil, nil, "apptainer", "inspect", dest)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "app: primes\n", r.stdout)
}

func TestBindParsing(t *testing.T) {
	apptainertest.Install(t, apptainertest.Apptainer)
	img := busyboxSIF(t, nil)
	a, b := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(a, "fa"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(b, "fb"), nil, 0o644))
	// Comma-separated lists with options, -B shorthand, APPTAINER_BIND.
	r := runTool(t, "/", nil, []string{"APPTAINER_BIND=" + b + ":/envbind"}, "apptainer", "exec",
		"-B", a+":/x:ro,"+b+":/y", img, "sh", "-c", "ls /x /y /envbind; touch /y/new; touch /x/new 2>/dev/null || echo ro")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "/envbind:\nfb\n\n/x:\nfa\n\n/y:\nfb\n"+"ro\n", r.stdout)
	require.FileExists(t, filepath.Join(b, "new"))

	r = runTool(t, "/", nil, nil, "apptainer", "exec", "-B", a+":/x:bogus", img, "true")
	require.Equal(t, 255, r.code)
	require.Contains(t, r.stderr, "FATAL:   while parsing bind path:")
}
