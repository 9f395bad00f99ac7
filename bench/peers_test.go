package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Knobs of the peer benchmarks (environment variables), with their defaults.
var (
	peerTasks     = envInt("SCALEBOX_BENCH_PEER_TASKS", 20000)    // Dask tasks of each kind (EndToEnd's default)
	peerWorkers   = envInt("SCALEBOX_BENCH_PEER_WORKERS", 2)      // Dask worker processes, 1 thread each
	snakemakeJobs = envInt("SCALEBOX_BENCH_SNAKEMAKE_JOBS", 1000) // Snakemake jobs (plus the rule all)
)

const (
	// peerPython is Debian's interpreter, which sees python3-distributed
	// (the python3 on PATH may be another one that does not).
	peerPython = "/usr/bin/python3"
	// peerSnakemake is Debian's snakemake (apt-get install snakemake).
	peerSnakemake = "/usr/bin/snakemake"
)

// daskResult is the JSON line peers/dask_bench.py prints.
type daskResult struct {
	Peer             string  `json:"peer"`
	Version          string  `json:"version"`
	DaskVersion      string  `json:"dask_version"`
	Python           string  `json:"python"`
	Workers          int     `json:"workers"`
	Tasks            int     `json:"tasks"`
	NoopTasksPerS    float64 `json:"noop_tasks_per_s"`
	ProcTasksPerS    float64 `json:"proc_tasks_per_s"`
	NoopS            float64 `json:"noop_s"`
	ProcS            float64 `json:"proc_s"`
	NoopCPUUsPerTask float64 `json:"noop_cpu_us_per_task"`
	ProcCPUUsPerTask float64 `json:"proc_cpu_us_per_task"`
}

// BenchmarkPeerDask runs peers/dask_bench.py: a Dask distributed
// LocalCluster of peerWorkers worker processes (1 thread each) runs
// peerTasks no-op tasks, then peerTasks tasks that each run /bin/true
// through subprocess.run, submitted with client.map and gathered. Each
// figure is timed inside the script, from the submit to the last result
// gathered; the cluster's start and a small warm-up are not timed.
func BenchmarkPeerDask(b *testing.B) {
	if out, err := exec.Command(peerPython, "-c", "import distributed").CombinedOutput(); err != nil {
		b.Skipf("Dask distributed is not installed for %s (apt-get install python3-distributed): %v %s",
			peerPython, err, bytes.TrimSpace(out))
	}
	script, err := filepath.Abs(filepath.Join("peers", "dask_bench.py"))
	if err != nil {
		b.Fatal(err)
	}
	var (
		noop, proc       time.Duration // timed windows, summed over iterations
		noopCPU, procCPU float64       // µs, summed over iterations
		total            int           // tasks of each kind, summed
		other, wall      time.Duration // over whole runs of the script
		last             daskResult
	)
	for i := 0; i < b.N; i++ {
		cpu0 := readCPU()
		start := time.Now()
		out := runPeer(b, 10*time.Minute, peerPython, script, strconv.Itoa(peerWorkers), strconv.Itoa(peerTasks))
		wall += time.Since(start)
		other += readCPU().sub(cpu0).foreign()
		var r daskResult
		if err := json.Unmarshal(lastLine(out), &r); err != nil {
			b.Fatalf("dask_bench.py: %v; stdout:\n%s", err, tailText(out))
		}
		if r.Peer != "dask" || r.Tasks != peerTasks || r.Workers != peerWorkers || r.NoopS <= 0 || r.ProcS <= 0 {
			b.Fatalf("dask_bench.py: unexpected result %+v", r)
		}
		noop += seconds(r.NoopS)
		proc += seconds(r.ProcS)
		noopCPU += r.NoopCPUUsPerTask * float64(r.Tasks)
		procCPU += r.ProcCPUUsPerTask * float64(r.Tasks)
		total += r.Tasks
		last = r
		b.Logf("iteration %d: %d no-op tasks in %v, %d /bin/true tasks in %v (script ran %v)", i, r.Tasks,
			seconds(r.NoopS).Round(time.Millisecond), r.Tasks, seconds(r.ProcS).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	b.ReportMetric(float64(total)/noop.Seconds(), "noop-tasks/s")
	b.ReportMetric(float64(total)/proc.Seconds(), "proc-tasks/s")
	b.ReportMetric(noopCPU/float64(total), "noop-cpu-us/task")
	b.ReportMetric(procCPU/float64(total), "proc-cpu-us/task")
	b.ReportMetric(other.Seconds()/wall.Seconds(), "other-cores")
	b.Logf("Dask distributed %s (dask %s, Python %s), LocalCluster of %d worker processes × 1 thread, %d tasks of each kind: "+
		"%.0f no-op tasks/s, %.0f /bin/true tasks/s; CPU %s, %d cores; other processes used %.2f cores meanwhile (load average %s)",
		last.Version, last.DaskVersion, last.Python, peerWorkers, peerTasks, float64(total)/noop.Seconds(), float64(total)/proc.Seconds(),
		cpuModel(), runtime.NumCPU(), other.Seconds()/wall.Seconds(), loadAvg())
}

// BenchmarkPeerSnakemake runs the Snakefile of peers/ (snakemakeJobs jobs
// that each run /bin/true and touch their output, plus the rule all) with
// `snakemake -j 2 --quiet` in a fresh directory, and times the whole
// command, start-up and DAG included: that is what a user pays. It runs
// with Snakemake's default job selector (ILP, solved by the coinor-cbc
// that Debian's snakemake depends on) and with --scheduler greedy.
func BenchmarkPeerSnakemake(b *testing.B) {
	smk := peerSnakemake
	if _, err := os.Stat(smk); err != nil {
		if smk, err = exec.LookPath("snakemake"); err != nil {
			b.Skipf("Snakemake is not installed (apt-get install snakemake): %v", err)
		}
	}
	version := strings.TrimSpace(string(runPeer(b, time.Minute, smk, "--version")))
	snakefile, err := filepath.Abs(filepath.Join("peers", "Snakefile"))
	if err != nil {
		b.Fatal(err)
	}
	for _, sched := range []struct{ name, flags string }{
		{"ilp", ""}, // the default
		{"greedy", "--scheduler=greedy"},
	} {
		b.Run("scheduler="+sched.name, func(b *testing.B) {
			var wall, other, cpu time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				args := []string{"--snakefile", snakefile, "--directory", dir, "-j", "2", "--quiet"}
				if sched.flags != "" {
					args = append(args, sched.flags)
				}
				args = append(args, "--config", fmt.Sprintf("jobs=%d", snakemakeJobs))
				cpu0 := readCPU()
				b.StartTimer()
				start := time.Now()
				runPeer(b, 30*time.Minute, smk, args...)
				took := time.Since(start)
				b.StopTimer()
				d := readCPU().sub(cpu0)
				wall += took
				other += d.foreign()
				cpu += d.children
				outs, err := os.ReadDir(filepath.Join(dir, "out"))
				if err != nil || len(outs) != snakemakeJobs {
					b.Fatalf("snakemake made %d of %d output files (%v)", len(outs), snakemakeJobs, err)
				}
				b.Logf("iteration %d: %d jobs in %v", i, snakemakeJobs, took.Round(time.Millisecond))
			}
			total := float64(b.N * snakemakeJobs)
			b.ReportMetric(total/wall.Seconds(), "jobs/s")
			b.ReportMetric(float64(cpu.Microseconds())/total, "cpu-us/job")
			b.ReportMetric(other.Seconds()/wall.Seconds(), "other-cores")
			b.Logf("Snakemake %s, -j 2 --quiet %s, %d jobs (/bin/true + touch): %.1f jobs/s, %.0f µs CPU per job (snakemake, its shells and programs); "+
				"CPU %s, %d cores; other processes used %.2f cores meanwhile (load average %s)",
				version, sched.flags, snakemakeJobs, total/wall.Seconds(), float64(cpu.Microseconds())/total,
				cpuModel(), runtime.NumCPU(), other.Seconds()/wall.Seconds(), loadAvg())
		})
	}
}

// runPeer runs a peer's command to its end (within timeout) and returns its
// stdout; on failure it fails tb with the tail of the command's stderr.
// The command runs in a process group of its own, killed whole on timeout,
// so that no worker process outlives it.
func runPeer(tb testing.TB, timeout time.Duration, name string, args ...string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second // orphans holding the output pipes
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("%w (timed out after %v)", err, timeout)
		}
		tb.Fatalf("%s %s: %v\nstderr (tail):\n%s", name, strings.Join(args, " "), err, tailText(stderr.Bytes()))
	}
	return stdout.Bytes()
}

// lastLine is the last non-empty line of out.
func lastLine(out []byte) []byte {
	out = bytes.TrimSpace(out)
	if i := bytes.LastIndexByte(out, '\n'); i >= 0 {
		return out[i+1:]
	}
	return out
}

// tailText is the last 30 lines (at most 4 KiB) of out.
func tailText(out []byte) string {
	out = bytes.TrimRight(out, "\n")
	if len(out) > 4096 {
		out = out[len(out)-4096:]
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
