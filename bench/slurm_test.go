package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
)

// BenchmarkSlurmArrayVsPilots runs the same N no-op tasks (default 1,000,
// SCALEBOX_BENCH_ARRAY) two ways on the single-node Slurm cluster of
// scripts/slurm-cluster.sh: as a Slurm job array of N tiny jobs, and
// through one pilot submitted with sbatch (the scalebox binary) serving as
// many slots as the node has cores. Each figure runs from the first sbatch
// to the moment the last task is done (for the array: its last element has
// left the queue; for the pilot: the broker has recorded the last result),
// so the pilot's own job start is included.
func BenchmarkSlurmArrayVsPilots(b *testing.B) {
	n := envInt("SCALEBOX_BENCH_ARRAY", 1000)
	env := testenv.SlurmCluster(b)
	bin := testenv.Scalebox(b)
	dir := b.TempDir()
	var array, pilots time.Duration
	for i := 0; i < b.N; i++ {
		array += runArray(b, env, dir, n)
		pilots += runPilot(b, env, bin, dir, n)
	}
	b.ReportMetric(array.Seconds()/float64(b.N), "array-s")
	b.ReportMetric(pilots.Seconds()/float64(b.N), "pilot-s")
	b.ReportMetric(float64(array)/float64(pilots), "speedup")
	b.ReportMetric(float64(n*b.N)/array.Seconds(), "array-tasks/s")
	b.Logf("%d no-op tasks: Slurm job array %v, one pilot job %v (%.0f× faster through the pilot)",
		n, (array / time.Duration(b.N)).Round(time.Millisecond), (pilots / time.Duration(b.N)).Round(time.Millisecond), float64(array)/float64(pilots))
}

// sbatch submits a script and returns the job id.
func sbatch(tb testing.TB, env []string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("sbatch", append([]string{"--parsable"}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("sbatch %v: %v\n%s", args, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	id, _, _ := strings.Cut(lines[len(lines)-1], ";")
	return id
}

// waitGone polls squeue until the job (all its array elements) left the queue.
func waitGone(tb testing.TB, env []string, id string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		cmd := exec.Command("squeue", "-h", "-j", id, "-o", "%i")
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("job %s still queued after %v: %s", id, timeout, out)
		}
	}
}

func runArray(tb testing.TB, env []string, dir string, n int) time.Duration {
	script := filepath.Join(dir, "noop.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec /bin/true\n"), 0o755); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	id := sbatch(tb, env, "--job-name=bench-array", fmt.Sprintf("--array=0-%d", n-1), "--output=/dev/null", "--chdir="+dir, script)
	waitGone(tb, env, id, 30*time.Minute)
	return time.Since(start)
}

func runPilot(tb testing.TB, env []string, bin, dir string, n int) time.Duration {
	h := newHarness(tb, "sqlite")
	app := h.createApp(tb)
	ctx := context.Background()
	inputs := make([]api.TaskInput, n)
	for j := range inputs {
		inputs[j] = api.TaskInput{Body: fmt.Sprintf("task-%07d", j)}
	}
	slots := max(1, nodeCPUs(tb, env))
	script := filepath.Join(dir, "pilot.sh")
	body := fmt.Sprintf("#!/bin/sh\nexec %s --broker %s pilot run --app-id %d --slots noop:%d --max-idle 2s --scratch %s\n",
		bin, h.url, app.ID, slots, filepath.Join(dir, "scratch"))
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	if _, err := h.client.TaskAdd(ctx, app.ID, &api.TaskAddRequest{Module: "noop", Tasks: inputs}); err != nil {
		tb.Fatalf("add tasks: %v", err)
	}
	id := sbatch(tb, env, "--job-name=bench-pilot", "--output="+filepath.Join(dir, "pilot-%j.out"), "--chdir="+dir, script)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := h.st.waitOK(wctx, int64(n)); err != nil {
		out, _ := os.ReadFile(filepath.Join(dir, "pilot-"+id+".out"))
		tb.Fatalf("pilot job %s: %v\n%s", id, err, out)
	}
	took := time.Since(start)
	waitGone(tb, env, id, time.Minute) // the idle pilot leaves before the next round
	return took
}

// nodeCPUs is the CPU count Slurm gives the node.
func nodeCPUs(tb testing.TB, env []string) int {
	cmd := exec.Command("sinfo", "-h", "-o", "%c")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("sinfo: %v", err)
	}
	var c int
	fmt.Sscan(strings.TrimSpace(string(out)), &c)
	return c
}
