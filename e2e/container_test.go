package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/container/containertest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/singularity/apptainertest"
	"github.com/scalebox-hpc/scalebox/singularity/siftest"
)

// app-primes with its calc module inside an image: on real podman (an
// image imported offline from a busybox+bash root file system) and on the
// Apptainer test double (a real SIF of the same root file system), with a
// container per slot (tasks through the slot agent) and a container per
// task, one task per run and batches of 3. The router stays on the host.
// These tests set process environment variables (CONTAINERS_CONF, PATH):
// not parallel.

func TestAppPrimesInPodman(t *testing.T) {
	containertest.Podman(t)
	image := containertest.PodmanImage(t, containertest.Rootfs(t, scaleboxBinary(t)))
	runPrimesInImages(t, "podman", image)
}

func TestAppPrimesInApptainerDouble(t *testing.T) {
	apptainertest.Install(t, "apptainer")
	sif := siftest.BuildSIF(t, containertest.Rootfs(t, scaleboxBinary(t)))
	runPrimesInImages(t, "apptainer", sif)
}

func runPrimesInImages(t *testing.T, engine, image string) {
	for _, tc := range []struct {
		mode  string
		batch int
	}{{"slot", 1}, {"slot", 3}, {"task", 1}, {"task", 3}} {
		t.Run(fmt.Sprintf("%s/batch%d", tc.mode, tc.batch), func(t *testing.T) {
			e := newBroker(t, broker.Config{})
			a := e.createPrimes(t, engine, "CALC_IMAGE="+image, "TASK_BATCH_SIZE="+strconv.Itoa(tc.batch), "NUM_PARALLEL=2")
			p := e.startPilot(t, a.ID, "my-module:2,mr-module:1", "--container-engine", engine, "--container-mode", tc.mode)
			e.appDone(t, a.ID, primesDone, 3*time.Minute)
			require.EqualValues(t, 168, e.semaphore(t, a.ID))
			p.stop(t)

			// The perspective record of a calc attempt names its container.
			calc := e.tasks(t, a.ID, "my-module")
			d, err := e.client.TaskGet(e.ctx, calc[0].ID)
			require.NoError(t, err)
			att := d.Attempts[len(d.Attempts)-1]
			require.Equal(t, engine, att.Extra["runtime"])
			ctr, ok := att.Extra["container"].(map[string]any)
			require.True(t, ok, "attempt extra: %v", att.Extra)
			require.Equal(t, engine, ctr["engine"])
			require.Equal(t, tc.mode, ctr["mode"])
			require.Equal(t, image, ctr["image"])
			require.NotEmpty(t, ctr["start"])
			if tc.mode == "slot" {
				require.NotEmpty(t, ctr["ready"])
			} else {
				require.NotEmpty(t, ctr["stop"])
			}
			if engine == "apptainer" {
				require.Contains(t, ctr["image_digest"], "sha256:")
			}
			// The router ran on the host.
			r, err := e.client.TaskGet(e.ctx, e.tasks(t, a.ID, "mr-module")[0].ID)
			require.NoError(t, err)
			require.Equal(t, "host", r.Attempts[0].Extra["runtime"])
		})
	}
}

// Broken images, binds and disks fail the calc attempts with one clear
// error each, and the pilot stays responsive: it stops at once when told.
func TestContainerFailuresAreClearAttemptErrors(t *testing.T) {
	apptainertest.Install(t, "apptainer")
	good := siftest.BuildSIF(t, containertest.Rootfs(t, scaleboxBinary(t)))
	corrupt := siftest.Corrupt(t, good, siftest.Truncated)
	for _, tc := range []struct {
		name  string
		image string
		extra []string // pilot flags
		yaml  func(string) string
		want  string
	}{
		{name: "corrupt sif", image: corrupt, want: "corrupt"},
		{name: "failed pull", image: "docker://registry.invalid/nope:1", want: "While making image from oci registry"},
		{name: "missing bind source", image: good, want: "bind source missing",
			yaml: func(y string) string {
				return strings.Replace(y, "    base_image: ${CALC_IMAGE}\n", "    base_image: ${CALC_IMAGE}\n    volumes: [\"/nonexistent/scalebox-data:/data:ro\"]\n", 1)
			}},
		{name: "full scratch disk", image: good, want: "no space left on device",
			extra: []string{"--image-cache", tinyDisk(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newBroker(t, broker.Config{})
			yml, err := os.ReadFile(repoPath("examples/app-primes/app.yaml"))
			require.NoError(t, err)
			y := string(yml)
			if tc.yaml != nil {
				y = tc.yaml(y)
				require.NotEqual(t, string(yml), y)
			}
			a, err := e.client.AppCreate(e.ctx, &api.AppCreateRequest{YAML: y, Filename: "app.yaml",
				Vars:       appVars(t, map[string]string{"TAG": "broken", "CALC_IMAGE": tc.image, "NUM_GROUPS": "2"}),
				StartTasks: map[string][]string{"mr-module": {"1000"}}})
			require.NoError(t, err)
			p := e.startPilot(t, a.ID, "my-module:1,mr-module:1", append([]string{"--container-engine", "apptainer"}, tc.extra...)...)
			var calc []api.Task
			require.True(t, assertEventually(func() bool {
				calc = e.tasks(t, a.ID, "my-module")
				if len(calc) != 2 {
					return false
				}
				for _, c := range calc {
					switch c.Status {
					case api.StatusInitial, api.StatusReady, api.StatusQueued, api.StatusRunning:
						return false
					}
				}
				return true
			}, 2*time.Minute, 50*time.Millisecond), "calc tasks not final: %+v", calc)
			for _, c := range calc {
				d, err := e.client.TaskGet(e.ctx, c.ID)
				require.NoError(t, err)
				require.NotEmpty(t, d.Attempts)
				for _, att := range d.Attempts {
					require.Equal(t, -111, att.Code, "attempt %+v", att)
					require.Contains(t, att.Reason, tc.want)
					require.Equal(t, "app", att.Kind, "a broken image is the module's failure, not the infrastructure's")
				}
			}
			p.stop(t)
		})
	}
}

// tinyDisk is a 1 MiB tmpfs, too small for any image (root only).
func tinyDisk(t *testing.T) string {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tiny tmpfs needs root")
	}
	dir, err := os.MkdirTemp("", "scalebox-tiny-")
	require.NoError(t, err)
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput()
	require.NoError(t, err, string(out))
	t.Cleanup(func() {
		_ = exec.Command("umount", dir).Run()
		_ = os.RemoveAll(dir)
	})
	return dir
}

// pilotProc is a `scalebox pilot run` process of a test.
type pilotProc struct {
	cmd  *exec.Cmd
	out  *testenv.Buffer
	done chan error
}

// startPilot starts the scalebox binary as a pilot of app appID on this
// host, with the test's environment (container engines on PATH).
func (e *env) startPilot(t *testing.T, appID int64, slots string, args ...string) *pilotProc {
	t.Helper()
	argv := append([]string{"--broker", e.url, "pilot", "run", "--app-id", strconv.FormatInt(appID, 10),
		"--slots", slots, "--log-level", "debug", "--grace", "5s", "--scratch", filepath.Join(e.dir, "scratch")}, args...)
	cmd := exec.Command(scaleboxBinary(t), argv...)
	cmd.Env = append(os.Environ(), "SCALEBOX_TOKEN=", "SCALEBOX_TOKEN_FILE="+filepath.Join(e.dir, "no-token"),
		"GORACE=halt_on_error=1 atexit_sleep_ms=0")
	p := &pilotProc{cmd: cmd, out: &testenv.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	require.NoError(t, cmd.Start())
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("pilot output:\n%s", p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and expects the pilot to exit cleanly within 30 s,
// without a race report or a panic.
func (p *pilotProc) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-p.done:
		require.NoError(t, err, "pilot output:\n%s", p.out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("pilot did not stop within 30 s after SIGTERM:\n%s", p.out.String())
	}
	out := p.out.String()
	require.NotContains(t, out, "DATA RACE")
	require.NotContains(t, out, "panic:")
}
