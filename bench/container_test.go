package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/container/containertest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
	"github.com/scalebox-hpc/scalebox/singularity"
	"github.com/scalebox-hpc/scalebox/singularity/apptainertest"
	"github.com/scalebox-hpc/scalebox/singularity/siftest"
)

// BenchmarkContainerTaskOverhead is the per-task cost of running a task
// in a container, on one slot, task after task: /bin/true on the host
// (pilot/executor), in a podman container per task ("podman run --rm"),
// and through the slot agent of a podman container started once; the
// same two ways on the Apptainer test double, for reference (the double
// is not the real tool: see README). BENCH_CONTAINER_TASKS tasks per
// runtime (default 300); the slot container's start is not counted.
func BenchmarkContainerTaskOverhead(b *testing.B) {
	n := envInt("BENCH_CONTAINER_TASKS", 300)
	bin := testenv.Scalebox(b)
	rootfs := containertest.Rootfs(b, bin)
	dir, err := os.MkdirTemp("", "sbbench-") // short: unix socket paths
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	work, run := filepath.Join(dir, "work"), filepath.Join(dir, "run")
	for _, d := range []string{work, run} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	binds := []container.Bind{
		{Source: work, Target: "/work"},
		{Source: run, Target: container.RunDirTarget},
		{Source: bin, Target: container.AgentBinaryTarget, ReadOnly: true},
	}
	spec := executor.Spec{Argv: []string{"/bin/true", "task-0000001", "{}"}, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/work", OutputCap: 65535}
	var host time.Duration
	measure := func(b *testing.B, rt executor.Runtime) time.Duration {
		b.Helper()
		if _, err := rt.Run(context.Background(), spec); err != nil { // warm: starts a slot container
			b.Fatalf("%s: %v", rt.Name(), err)
		}
		var total time.Duration
		for i := 0; i < b.N; i++ {
			start := time.Now()
			for range n {
				res, err := rt.Run(context.Background(), spec)
				if err == nil && res.ExitCode != 0 {
					err = fmt.Errorf("exit %d: %s%s", res.ExitCode, res.Stderr, res.StartErr)
				}
				if err != nil {
					b.Fatalf("%s: %v", rt.Name(), err)
				}
			}
			total += time.Since(start)
		}
		per := total / time.Duration(b.N*n)
		b.ReportMetric(float64(per.Microseconds()), "us/task")
		if host > 0 {
			b.ReportMetric(float64(per)/float64(host), "x-host")
		}
		return per
	}
	hostSpec := spec
	hostSpec.Dir = work
	b.Run("host", func(b *testing.B) {
		host = measure(b, hostRuntime{spec: hostSpec})
	})
	slotRuntime := func(engine container.Engine, image string, mode container.Mode, remove func(context.Context, string) error) *container.Runtime {
		return &container.Runtime{Engine: engine, Mode: mode, Remove: remove,
			Base:          container.Spec{Image: image, Binds: binds},
			ContainerName: fmt.Sprintf("sbbench-%s-%s", engine.Name(), mode),
			AgentSocket:   filepath.Join(run, "a.sock"), AgentSocketTarget: container.RunDirTarget + "/a.sock",
			EngineEnv: singularity.StripContainerEnv(os.Environ())}
	}
	b.Run("podman", func(b *testing.B) {
		containertest.Podman(b)
		image := containertest.PodmanImage(b, rootfs)
		oci, err := container.NewOCI(container.FlavorPodman, "")
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []container.Mode{container.PerTask, container.PerSlot} {
			b.Run(string(mode), func(b *testing.B) {
				rt := slotRuntime(oci, image, mode, oci.Remove)
				defer rt.Close()
				measure(b, rt)
			})
		}
	})
	b.Run("apptainer-double", func(b *testing.B) {
		apptainertest.Install(b, "apptainer")
		tool, err := singularity.Detect(context.Background(), singularity.Config{})
		if err != nil {
			b.Fatal(err)
		}
		sif := siftest.BuildSIF(b, rootfs)
		for _, mode := range []container.Mode{container.PerTask, container.PerSlot} {
			b.Run(string(mode), func(b *testing.B) {
				rt := slotRuntime(tool, sif, mode, nil)
				defer rt.Close()
				measure(b, rt)
			})
		}
	})
}

// hostRuntime runs the spec on the host with its own work dir.
type hostRuntime struct{ spec executor.Spec }

func (h hostRuntime) Name() string { return "host" }

func (h hostRuntime) Run(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	return executor.Host{}.Run(ctx, h.spec)
}
