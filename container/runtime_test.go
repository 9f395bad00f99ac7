package container_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/container/containertest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
	"github.com/scalebox-hpc/scalebox/singularity"
	"github.com/scalebox-hpc/scalebox/singularity/apptainertest"
	"github.com/scalebox-hpc/scalebox/singularity/siftest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

// slotFixture is a slot runtime on the Apptainer test double: a SIF of a
// busybox+bash root file system, the scalebox binary as the agent.
type slotFixture struct {
	work, run string
	rt        *container.Runtime
}

func newSlot(t *testing.T, mode container.Mode, withAgent bool) *slotFixture {
	t.Helper()
	apptainertest.Install(t, "apptainer")
	bin := testenv.Scalebox(t)
	sif := siftest.BuildSIF(t, containertest.Rootfs(t, bin))
	tool, err := singularity.Detect(context.Background(), singularity.Config{})
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "sbrt-") // short: unix socket paths
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	f := &slotFixture{work: filepath.Join(dir, "work"), run: filepath.Join(dir, "run")}
	require.NoError(t, os.Mkdir(f.work, 0o755))
	require.NoError(t, os.Mkdir(f.run, 0o755))
	binds := []container.Bind{{Source: f.work, Target: "/work"}, {Source: f.run, Target: container.RunDirTarget}}
	if withAgent {
		binds = append(binds, container.Bind{Source: bin, Target: container.AgentBinaryTarget, ReadOnly: true})
	}
	f.rt = &container.Runtime{Engine: tool, Mode: mode, Base: container.Spec{Image: sif, Binds: binds},
		AgentSocket: filepath.Join(f.run, "a1.sock"), AgentSocketTarget: container.RunDirTarget + "/a1.sock",
		EngineEnv: singularity.StripContainerEnv(os.Environ()), StartTimeout: time.Minute}
	t.Cleanup(func() { _ = f.rt.Close() })
	return f
}

func sh(script string, env ...string) executor.Spec {
	return executor.Spec{Argv: []string{"/bin/sh", "-c", script}, Env: append([]string{"PATH=/usr/bin:/bin"}, env...), Dir: "/work"}
}

func TestSlotContainerRunsTasksInOneContainer(t *testing.T) {
	f := newSlot(t, container.PerSlot, true)
	ctx := context.Background()
	var start time.Time
	for i := range 3 {
		res, err := f.rt.Run(ctx, sh(`echo "$GREETING from $(pwd)" > out.txt; cat out.txt; exit 3`, "GREETING=hi"))
		require.NoError(t, err)
		require.Equal(t, 3, res.ExitCode)
		require.Equal(t, "hi from /work\n", res.Stdout)
		run := f.rt.LastRun(res)
		require.Equal(t, container.PerSlot, run.Mode)
		require.NotNil(t, run.Ready)
		if i == 0 {
			start = run.Start
		}
		require.Equal(t, start, run.Start, "one container for every task of the slot")
	}
	b, err := os.ReadFile(filepath.Join(f.work, "out.txt"))
	require.NoError(t, err)
	require.Equal(t, "hi from /work\n", string(b))

	// A timeout kills the task, not the container.
	spec := sh("sleep 30")
	spec.Timeout, spec.Grace = 100*time.Millisecond, 100*time.Millisecond
	res, err := f.rt.Run(ctx, spec)
	require.NoError(t, err)
	require.True(t, res.TimedOut)
	res, err = f.rt.Run(ctx, sh("echo still here"))
	require.NoError(t, err)
	require.Equal(t, "still here\n", res.Stdout)
	require.Equal(t, start, f.rt.LastRun(res).Start)

	require.NoError(t, f.rt.Close())
	_, err = f.rt.Run(ctx, sh("true"))
	require.ErrorContains(t, err, "closed")
}

func TestSlotContainerIsRestartedAfterItDies(t *testing.T) {
	f := newSlot(t, container.PerSlot, true)
	ctx := context.Background()
	res, err := f.rt.Run(ctx, sh("true"))
	require.NoError(t, err)
	first := f.rt.LastRun(res).Start

	// The task kills its agent: the run fails with an error, not a result.
	res, err = f.rt.Run(ctx, sh("kill -9 $PPID; sleep 30"))
	require.Error(t, err)
	require.Nil(t, res)

	res, err = f.rt.Run(ctx, sh("echo again"))
	require.NoError(t, err)
	require.Equal(t, "again\n", res.Stdout)
	require.NotEqual(t, first, f.rt.LastRun(res).Start, "a new container")
}

func TestSlotContainerThatCannotStartSaysWhy(t *testing.T) {
	f := newSlot(t, container.PerSlot, false) // no agent binary in the container
	_, err := f.rt.Run(context.Background(), sh("true"))
	require.ErrorContains(t, err, "start slot container (apptainer")
	require.ErrorContains(t, err, container.AgentBinaryTarget, "the engine's own words name the missing agent")
}

func TestPerTaskContainer(t *testing.T) {
	f := newSlot(t, container.PerTask, false)
	res, err := f.rt.Run(context.Background(), sh(`echo "$X"; exit 4`, "X=a b 'c'"))
	require.NoError(t, err)
	require.Equal(t, 4, res.ExitCode)
	require.Equal(t, "a b 'c'\n", res.Stdout)
	run := f.rt.LastRun(res)
	require.Equal(t, container.PerTask, run.Mode)
	require.NotNil(t, run.Stop)
	require.False(t, run.Stop.Before(run.Start))
}

// In podman the agent is process 1 of its container: what a task leaves
// behind is killed with its process group and reaped by the agent, so no
// zombie piles up over a long run.
func TestPodmanSlotAgentReapsWhatTasksLeaveBehind(t *testing.T) {
	containertest.Podman(t)
	bin := testenv.Scalebox(t)
	image := containertest.PodmanImage(t, containertest.Rootfs(t, bin))
	oci, err := container.NewOCI(container.FlavorPodman, "")
	require.NoError(t, err)
	dir, err := os.MkdirTemp("", "sbrt-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	work, run := filepath.Join(dir, "work"), filepath.Join(dir, "run")
	require.NoError(t, os.Mkdir(work, 0o755))
	require.NoError(t, os.Mkdir(run, 0o755))
	rt := &container.Runtime{Engine: oci, Mode: container.PerSlot, Remove: oci.Remove, ContainerName: "sbrt-reap",
		Base: container.Spec{Image: image, Binds: []container.Bind{{Source: work, Target: "/work"},
			{Source: run, Target: container.RunDirTarget}, {Source: bin, Target: container.AgentBinaryTarget, ReadOnly: true}}},
		AgentSocket: filepath.Join(run, "a.sock"), AgentSocketTarget: container.RunDirTarget + "/a.sock"}
	t.Cleanup(func() { _ = rt.Close() })
	ctx := context.Background()
	for range 5 {
		res, err := rt.Run(ctx, sh("sleep 1000 >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 & echo started"))
		require.NoError(t, err)
		require.Equal(t, "started\n", res.Stdout)
	}
	zombies := func() string {
		res, err := rt.Run(ctx, sh(`for f in /proc/[0-9]*/stat; do read -r l < "$f" && echo "${l##*) }"; done | grep -c '^Z' || true`))
		require.NoError(t, err)
		return res.Stdout
	}
	// The kills and SIGCHLDs of the last task may still be in flight.
	deadline := time.Now().Add(10 * time.Second)
	for zombies() != "0\n" {
		require.True(t, time.Now().Before(deadline), "zombies left in the slot container: %s", zombies())
	}
}
