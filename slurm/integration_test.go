package slurm

// Integration tests against a real single-node Slurm cluster, started on
// first use by internal/testenv with scripts/slurm-cluster.sh in a
// temporary directory. Without the Slurm binaries the tests fail, unless
// SCALEBOX_SKIP_SLURM=1 (then they skip and say why). The walltime test takes over a
// minute (Slurm enforces limits late): it runs only with
// SCALEBOX_SLURM_WALLTIME=1 and without -short.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup()
	os.Exit(code)
}

// counting is a Commander that counts the commands it runs.
type counting struct {
	batch.Commander
	mu sync.Mutex
	n  map[string]int
}

func (c *counting) Run(ctx context.Context, name string, args []string, stdin io.Reader) ([]byte, []byte, error) {
	c.mu.Lock()
	c.n[name]++
	c.mu.Unlock()
	return c.Commander.Run(ctx, name, args, stdin)
}

func (c *counting) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

func realScheduler(t *testing.T) (*Scheduler, *counting) {
	t.Helper()
	c := &counting{Commander: batch.Exec{Env: testenv.SlurmCluster(t)}, n: map[string]int{}}
	return New(c), c
}

// waitFor polls Status until cond holds for id, and returns every state seen.
func waitFor(t *testing.T, s *Scheduler, id batch.JobID, timeout time.Duration, cond func(batch.JobStatus) bool) (batch.JobStatus, []batch.State) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var seen []batch.State
	for {
		res, err := s.Status(ctx, []batch.JobID{id})
		if err != nil {
			t.Fatalf("Status(%s): %v", id, err)
		}
		st := res[id]
		if len(seen) == 0 || seen[len(seen)-1] != st.State {
			seen = append(seen, st.State)
		}
		if cond(st) {
			return st, seen
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %s: waited %v, last %s, seen %v", id, timeout, fmtStatus(st), seen)
		case <-tick.C:
		}
	}
}

func final(st batch.JobStatus) bool { return st.State.Final() }

func TestSlurmCluster(t *testing.T) {
	s, cmds := realScheduler(t)
	t.Logf("cluster started in %v", testenv.SlurmStarted())
	dir := t.TempDir()

	t.Run("complete", func(t *testing.T) {
		t.Parallel()
		out := filepath.Join(dir, "complete-%j.out")
		name := `pilot #1 "quoted" 'single'`
		t0 := time.Now()
		id, err := s.Submit(t.Context(), &batch.JobSpec{
			Name: name, Walltime: 5 * time.Minute, CoresPerTask: 1, MemoryMB: 100, Output: out,
			SignalMargin: 30 * time.Second,
			Env:          map[string]string{"GREETING": "hello 'world' $HOME"},
			Command:      []string{"sh", "-c", `sleep 1.5; printf '%s\n' "$GREETING"`},
		})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := waitFor(t, s, id, 20*time.Second, func(st batch.JobStatus) bool { return st.State == batch.Running || final(st) })
		if st.State != batch.Running || st.Node == "" {
			t.Fatalf("not seen running: %s", fmtStatus(st))
		}
		t.Logf("submit → RUNNING in %v", time.Since(t0))
		st, seen := waitFor(t, s, id, 30*time.Second, final)
		if st.State != batch.Completed || st.ExitCode == nil || *st.ExitCode != 0 || st.Native != "COMPLETED" {
			t.Fatalf("%s, seen %v", fmtStatus(st), seen)
		}
		t.Logf("submit → COMPLETED in %v", time.Since(t0))
		got, err := os.ReadFile(strings.ReplaceAll(out, "%j", string(id)))
		if err != nil || string(got) != "hello 'world' $HOME\n" {
			t.Errorf("output %q, %v", got, err)
		}
		// sbatch read the quoted job name back intact
		jn, _, err := batch.Exec{Env: testenv.SlurmCluster(t)}.Run(t.Context(), "squeue", []string{"-h", "-t", "all", "-j", string(id), "-o", "%j"}, nil)
		if err != nil || strings.TrimSpace(string(jn)) != name {
			t.Errorf("job name %q, %v; want %q", jn, err, name)
		}
	})

	t.Run("fail", func(t *testing.T) {
		t.Parallel()
		id, err := s.Submit(t.Context(), &batch.JobSpec{Name: "fail", Output: "/dev/null", Command: []string{"sh", "-c", "exit 3"}})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := waitFor(t, s, id, 30*time.Second, final)
		if st.State != batch.Failed || st.ExitCode == nil || *st.ExitCode != 3 || st.Native != "FAILED" || st.Reason != "NonZeroExitCode" {
			t.Fatalf("%s", fmtStatus(st))
		}
	})

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		_, err := s.Submit(t.Context(), &batch.JobSpec{Queue: "nope", Command: []string{"true"}})
		if err == nil || !strings.Contains(err.Error(), "Invalid partition name specified") {
			t.Fatalf("submission to a missing partition: %v", err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		id, err := s.Submit(t.Context(), &batch.JobSpec{Name: "cancel", Output: "/dev/null", Command: []string{"sleep", "300"}})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, s, id, 20*time.Second, func(st batch.JobStatus) bool { return st.State == batch.Running })
		if err := s.Cancel(t.Context(), id); err != nil {
			t.Fatal(err)
		}
		st, _ := waitFor(t, s, id, 30*time.Second, final)
		if st.State != batch.Cancelled || st.Native != "CANCELLED" {
			t.Fatalf("%s", fmtStatus(st))
		}
		if err := s.Cancel(t.Context(), id); err != nil {
			t.Errorf("cancel again: %v", err)
		}
		if err := s.Cancel(t.Context(), "99999999"); err != nil {
			t.Errorf("cancel unknown: %v", err)
		}
	})

	t.Run("array-detect", func(t *testing.T) {
		t.Parallel()
		envDir := t.TempDir()
		// each task writes its environment, then waits to be released
		// by the release file (or its walltime)
		id, err := s.Submit(t.Context(), &batch.JobSpec{
			Name: "array", ArraySize: 3, Walltime: 10 * time.Minute, Output: "/dev/null",
			Env: map[string]string{"ENVDIR": envDir},
			Command: []string{"sh", "-c", `env > "$ENVDIR/env.$SLURM_ARRAY_TASK_ID.tmp" && mv "$ENVDIR/env.$SLURM_ARRAY_TASK_ID.tmp" "$ENVDIR/env.$SLURM_ARRAY_TASK_ID"
while [ ! -e "$ENVDIR/release" ]; do sleep 0.2; done`},
		})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		// all three tasks run (the node advertises 8 CPUs)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			res, err := s.Status(ctx, []batch.JobID{id})
			if err != nil {
				t.Fatal(err)
			}
			running := 0
			for i := 0; i < 3; i++ {
				if st := res[batch.JobID(fmt.Sprintf("%s_%d", id, i))]; st.State == batch.Running {
					running++
				}
			}
			_, err = os.Stat(filepath.Join(envDir, "env.1"))
			if running == 3 && err == nil && res[id].State == batch.Running {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("array %s: %d running after 30 s: %v", id, running, res)
			case <-tick.C:
			}
		}

		env := readEnv(t, filepath.Join(envDir, "env.1"))
		a, ok, err := DetectAllocation(func(k string) string { return env[k] }, batch.Exec{Env: testenv.SlurmCluster(t)})
		if err != nil || !ok {
			t.Fatalf("DetectAllocation: %v %v", ok, err)
		}
		host, _ := exec.Command("hostname", "-s").Output()
		if a.JobID != batch.JobID(string(id)+"_1") || a.ArrayIdx != 1 || a.CPUs < 1 ||
			len(a.Nodes) != 1 || a.Nodes[0] != strings.TrimSpace(string(host)) || a.Scheduler != "slurm" {
			t.Errorf("allocation %+v", a)
		}
		if d := time.Until(a.End); d < 8*time.Minute || d > 10*time.Minute+5*time.Second {
			t.Errorf("end %v is %v away, want about 10 min", a.End, d)
		}
		// the raw job id a task sees in SLURM_JOB_ID also finds it
		res, err := s.Status(t.Context(), []batch.JobID{batch.JobID(env["SLURM_JOB_ID"])})
		if err != nil || res[batch.JobID(env["SLURM_JOB_ID"])].State != batch.Running {
			t.Errorf("by raw id %s: %v %v", env["SLURM_JOB_ID"], res, err)
		}

		if err := os.WriteFile(filepath.Join(envDir, "release"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		st, _ := waitFor(t, s, id, 30*time.Second, final)
		res, err = s.Status(t.Context(), []batch.JobID{id})
		if err != nil {
			t.Fatal(err)
		}
		if st.State != batch.Completed || len(res) != 4 {
			t.Errorf("array %s: %v", fmtStatus(st), res)
		}
		for i := 0; i < 3; i++ {
			if st := res[batch.JobID(fmt.Sprintf("%s_%d", id, i))]; st.State != batch.Completed {
				t.Errorf("task %d: %s", i, fmtStatus(st))
			}
		}
		t.Logf("array of 3: submit → all COMPLETED in %v", time.Since(t0))
	})

	t.Run("unknown", func(t *testing.T) {
		t.Parallel()
		res, err := s.Status(t.Context(), []batch.JobID{"99999998", "99999999_2"})
		if err != nil {
			t.Fatal(err)
		}
		for id, st := range res {
			if st.State != batch.Unknown || !strings.Contains(st.Reason, "accounting storage is disabled") {
				t.Errorf("%s: %s", id, fmtStatus(st))
			}
		}
	})

	t.Run("walltime", func(t *testing.T) {
		if testing.Short() || os.Getenv("SCALEBOX_SLURM_WALLTIME") != "1" {
			t.Skip("walltime enforcement takes 1-2 min: set SCALEBOX_SLURM_WALLTIME=1 (and no -short)")
		}
		t.Parallel()
		id, err := s.Submit(t.Context(), &batch.JobSpec{Name: "walltime", Walltime: time.Minute, Output: "/dev/null", Command: []string{"sleep", "600"}})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := waitFor(t, s, id, 3*time.Minute, final)
		if st.State != batch.Timeout || st.Reason != "TimeLimit" {
			t.Fatalf("%s", fmtStatus(st))
		}
	})

	t.Cleanup(func() {
		t.Logf("commands run: sbatch %d, squeue %d, sacct %d, scancel %d",
			cmds.count("sbatch"), cmds.count("squeue"), cmds.count("sacct"), cmds.count("scancel"))
	})
}

// TestSlurmClusterScript checks the script's idempotent start, status and env.
func TestSlurmClusterScript(t *testing.T) {
	dir := testenv.SlurmDir(t)
	script, _ := filepath.Abs("../scripts/slurm-cluster.sh")
	out, err := exec.Command(script, "start", dir).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("already running")) {
		t.Errorf("second start: %v %s", err, out)
	}
	if out, err := exec.Command(script, "status", dir).CombinedOutput(); err != nil {
		t.Errorf("status: %v %s", err, out)
	}
	out, err = exec.Command(script, "env", dir).Output()
	if want := "export SLURM_CONF=" + filepath.Join(dir, "slurm.conf") + "\n"; err != nil || string(out) != want {
		t.Errorf("env: %q %v, want %q", out, err, want)
	}
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}
