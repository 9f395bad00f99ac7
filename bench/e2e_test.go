// Package bench holds Scalebox's end-to-end benchmarks: a broker in this
// process over real HTTP on 127.0.0.1, pilots in this process running
// /bin/true as real child processes, on SQLite and on PostgreSQL. See
// README.md for how to run them and what each figure means.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.Cleanup() // the Slurm cluster of BenchmarkSlurmArrayVsPilots
	if err := pgtest.Stop(); err != nil && code == 0 {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

// Knobs (environment variables), with their defaults.
var (
	e2eTasks      = envInt("SCALEBOX_BENCH_TASKS", 20000)    // tasks per EndToEnd iteration
	e2eBatch      = envInt("SCALEBOX_BENCH_BATCH", 500)      // tasks per TaskAdd request
	e2ePilots     = envInt("SCALEBOX_BENCH_PILOTS", 2)       // pilots in EndToEnd
	dispatchTasks = envInt("SCALEBOX_BENCH_DISPATCH", 200)   // tasks per DispatchLatency iteration
	execRuns      = envInt("SCALEBOX_BENCH_EXEC_RUNS", 4000) // programs per ForkExecCeiling iteration
	e2ePrefetch   = envInt("SCALEBOX_BENCH_PREFETCH", 0)     // pilot.Config.Prefetch (0: the pilot's adaptive default)
)

// e2eRows are the intervals the EndToEnd benchmark logs, in order.
var e2eRows = []string{
	"created→leased (queueing)",
	"leased→started_at (to a slot)",
	"started_at→program_start (prep)",
	"leased→program_start",
	"program_start→program_end (exec)",
	"program_end→reported_at (collect)",
	"program_end→recorded_at",
	"program_end→committed",
	"created→recorded_at",
}

// BenchmarkEndToEnd adds e2eTasks no-op tasks (command /bin/true) in
// batches of e2eBatch and measures the wall time until the last is
// recorded OK, with e2ePilots pilots of 2 or 4 slots each, on SQLite and
// on PostgreSQL. Each iteration has a fresh store, app and pilots; the
// setup is not timed.
func BenchmarkEndToEnd(b *testing.B) {
	for _, kind := range backends {
		for _, slots := range []int{2, 4} {
			b.Run(fmt.Sprintf("%s/pilots=%d/slots=%d", kind, e2ePilots, slots), func(b *testing.B) {
				benchEndToEnd(b, kind, e2ePilots, slots, e2eTasks, e2eBatch)
			})
		}
	}
}

func benchEndToEnd(b *testing.B, kind string, nPilots, slots, nTasks, batch int) {
	b.ReportAllocs()
	samples := map[string]dist{}
	var (
		wall, addTime time.Duration
		cpu           cpuTimes
		total         int
	)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h := newHarness(b, kind)
		app := h.createApp(b)
		ps := h.startPilots(b, app.ID, nPilots, slots)
		inputs := make([]api.TaskInput, nTasks)
		for j := range inputs {
			inputs[j] = api.TaskInput{Body: fmt.Sprintf("task-%07d", j)}
		}
		runtime.GC()
		var ids []int64
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)

		h.st.resetCalls()
		b.StartTimer()
		cpu0 := readCPU()
		start := time.Now()
		pprof.Do(ctx, pprof.Labels("role", "client"), func(ctx context.Context) {
			ids = addTasks(ctx, b, h, app.ID, "noop", inputs, batch)
		})
		added := time.Now()
		if err := h.st.waitOK(ctx, int64(nTasks)); err != nil {
			b.Fatalf("wait for tasks: %v", err)
		}
		end := h.st.lastCommit()
		cpu1 := readCPU()
		b.StopTimer()
		cancel()

		perPilot, err := ps.stop()
		if err != nil {
			b.Fatalf("%v", err)
		}
		wall += end.Sub(start)
		addTime += added.Sub(start)
		total += nTasks
		d := cpu1.sub(cpu0)
		cpu.self += d.self
		cpu.children += d.children
		cpu.postgres += d.postgres
		cpu.pgKnown = d.pgKnown
		cpu.machine += d.machine
		b.Logf("iteration %d: %d tasks in %v (added in %v), OK per pilot %v\n%s", i, nTasks, end.Sub(start).Round(time.Millisecond),
			added.Sub(start).Round(time.Millisecond), perPilot, h.st.callTable())

		for _, a := range h.attempts(b, ids) {
			_, committed := h.st.times(a.TaskID)
			add := func(name string, from, to time.Time) {
				if !from.IsZero() && !to.IsZero() {
					samples[name] = append(samples[name], to.Sub(from))
				}
			}
			add(e2eRows[0], a.CreatedAt, a.LeasedAt)
			add(e2eRows[1], a.LeasedAt, a.StartedAt)
			add(e2eRows[2], a.StartedAt, a.ProgramStart)
			add(e2eRows[3], a.LeasedAt, a.ProgramStart)
			add(e2eRows[4], a.ProgramStart, a.ProgramEnd)
			add(e2eRows[5], a.ProgramEnd, a.ReportedAt)
			add(e2eRows[6], a.ProgramEnd, a.RecordedAt)
			add(e2eRows[7], a.ProgramEnd, committed)
			add(e2eRows[8], a.CreatedAt, a.RecordedAt)
		}
	}
	rate := float64(total) / wall.Seconds()
	b.ReportMetric(rate, "tasks/s")
	b.ReportMetric(float64(wall.Microseconds())/float64(total), "us/task")
	for _, m := range []struct {
		row, unit string
	}{
		{e2eRows[3], "lease-start"},
		{e2eRows[6], "end-recorded"},
		{e2eRows[8], "created-recorded"},
	} {
		s := samples[m.row].sorted()
		b.ReportMetric(ms(s.q(.5)), m.unit+"-p50-ms")
		b.ReportMetric(ms(s.q(.99)), m.unit+"-p99-ms")
	}
	b.ReportMetric(float64(cpu.self.Microseconds())/float64(total), "proc-cpu-us/task")
	b.ReportMetric(float64(cpu.children.Microseconds())/float64(total), "child-cpu-us/task")
	if cpu.pgKnown {
		b.ReportMetric(float64(cpu.postgres.Microseconds())/float64(total), "pg-cpu-us/task")
	}
	// Cores the run kept busy, and cores other processes took meanwhile:
	// figures taken with other-cores well above 0 are not this machine's best.
	b.ReportMetric(cpu.machine.Seconds()/wall.Seconds()-cpu.foreign().Seconds()/wall.Seconds(), "busy-cores")
	b.ReportMetric(cpu.foreign().Seconds()/wall.Seconds(), "other-cores")
	b.Logf("%s, %d pilots × %d slots (prefetch %d), %d tasks in batches of %d, scratch %s: %.0f tasks/s (wall %v, adding took %v); CPU %s, %d cores\n%s",
		kind, nPilots, slots, e2ePrefetch, total, batch, scratchText(), rate, wall.Round(time.Millisecond), addTime.Round(time.Millisecond),
		cpuModel(), runtime.NumCPU(), table(e2eRows, samples))
	b.Logf("CPU per task: process (broker + pilots + client) %.0f µs, module programs %.0f µs, postgres %s; other processes used %.2f cores meanwhile (load average %s)",
		float64(cpu.self.Microseconds())/float64(total), float64(cpu.children.Microseconds())/float64(total),
		pgCPUText(cpu, total), cpu.foreign().Seconds()/wall.Seconds(), loadAvg())
}

func pgCPUText(c cpuTimes, total int) string {
	if !c.pgKnown {
		return "n/a"
	}
	return fmt.Sprintf("%.0f µs", float64(c.postgres.Microseconds())/float64(total))
}

// dispatchRows are the intervals the DispatchLatency benchmark logs.
var dispatchRows = []string{
	"add→add returned",
	"add→leased_at",
	"add→lease committed",
	"add→started_at",
	"add→program_start",
	"add→program_end",
	"add→committed",
}

// BenchmarkDispatchLatency has one idle pilot (one slot) long-polling and
// adds one task at a time, each only once the previous one is recorded and
// the pilot is polling again; it measures add → leased and add → program
// start.
func BenchmarkDispatchLatency(b *testing.B) {
	for _, kind := range backends {
		b.Run(kind, func(b *testing.B) { benchDispatch(b, kind, dispatchTasks) })
	}
}

func benchDispatch(b *testing.B, kind string, n int) {
	samples := map[string]dist{}
	var wall, other time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h := newHarness(b, kind)
		app := h.createApp(b)
		ps := h.startPilots(b, app.ID, 1, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		addAt := make([]time.Time, n)
		returned := make([]time.Time, n)
		ids := make([]int64, n)
		cpu0 := readCPU()
		start := time.Now()
		b.StartTimer()
		pprof.Do(ctx, pprof.Labels("role", "client"), func(ctx context.Context) {
			for j := range n {
				for h.brk.Waiting() < 1 { // the pilot is long-polling again
					time.Sleep(50 * time.Microsecond)
				}
				addAt[j] = time.Now()
				r, err := h.client.TaskAdd(ctx, app.ID, &api.TaskAddRequest{Module: "noop",
					Tasks: []api.TaskInput{{Body: fmt.Sprintf("one-%07d", j)}}})
				returned[j] = time.Now()
				if err != nil {
					b.Fatalf("add task: %v", err)
				}
				ids[j] = r.IDs[0]
				if err := h.st.waitOK(ctx, int64(j+1)); err != nil {
					b.Fatalf("wait for task %d: %v", j, err)
				}
			}
		})
		b.StopTimer()
		other += readCPU().sub(cpu0).foreign()
		wall += time.Since(start)
		cancel()
		if _, err := ps.stop(); err != nil {
			b.Fatalf("%v", err)
		}
		for j, a := range h.attempts(b, ids) {
			leased, committed := h.st.times(a.TaskID)
			t0 := addAt[j]
			samples[dispatchRows[0]] = append(samples[dispatchRows[0]], returned[j].Sub(t0))
			samples[dispatchRows[1]] = append(samples[dispatchRows[1]], a.LeasedAt.Sub(t0))
			samples[dispatchRows[2]] = append(samples[dispatchRows[2]], leased.Sub(t0))
			samples[dispatchRows[3]] = append(samples[dispatchRows[3]], a.StartedAt.Sub(t0))
			samples[dispatchRows[4]] = append(samples[dispatchRows[4]], a.ProgramStart.Sub(t0))
			samples[dispatchRows[5]] = append(samples[dispatchRows[5]], a.ProgramEnd.Sub(t0))
			samples[dispatchRows[6]] = append(samples[dispatchRows[6]], committed.Sub(t0))
		}
	}
	for _, m := range []struct{ row, unit string }{
		{dispatchRows[1], "add-leased"},
		{dispatchRows[4], "add-start"},
		{dispatchRows[6], "add-committed"},
	} {
		s := samples[m.row].sorted()
		b.ReportMetric(ms(s.q(.5)), m.unit+"-p50-ms")
		b.ReportMetric(ms(s.q(.99)), m.unit+"-p99-ms")
	}
	b.ReportMetric(other.Seconds()/wall.Seconds(), "other-cores")
	b.Logf("%s, one idle pilot, %d tasks one at a time (other processes used %.2f cores meanwhile, load average %s):\n%s",
		kind, len(samples[dispatchRows[0]]), other.Seconds()/wall.Seconds(), loadAvg(), table(dispatchRows, samples))
}

// BenchmarkForkExecCeiling is this machine's ceiling for the same work
// without Scalebox: goroutines running /bin/true back to back, through
// os/exec and through the pilot's own host runtime (pilot/executor, with
// the process group, output pipes, pidfd and rusage it sets up).
func BenchmarkForkExecCeiling(b *testing.B) {
	for _, g := range []int{2, 4} {
		b.Run(fmt.Sprintf("os-exec/goroutines=%d", g), func(b *testing.B) {
			benchExec(b, g, func() error { return exec.Command("/bin/true", "task-0000001", "{}").Run() })
		})
	}
	env := os.Environ()
	dir := b.TempDir()
	for _, g := range []int{2, 4} {
		b.Run(fmt.Sprintf("executor-host/goroutines=%d", g), func(b *testing.B) {
			benchExec(b, g, func() error {
				res, err := executor.Host{}.Run(context.Background(), executor.Spec{
					Argv: []string{"/bin/true", "task-0000001", "{}"}, Env: env, Dir: dir, OutputCap: 65535})
				if err == nil && res.ExitCode != 0 {
					err = fmt.Errorf("exit %d", res.ExitCode)
				}
				return err
			})
		})
	}
}

func benchExec(b *testing.B, goroutines int, run func() error) {
	var total, other time.Duration
	for i := 0; i < b.N; i++ {
		cpu0 := readCPU()
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr atomic.Value
		start := time.Now()
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(execRuns) {
					if err := run(); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		total += time.Since(start)
		other += readCPU().sub(cpu0).foreign()
		if err, _ := firstErr.Load().(error); err != nil {
			b.Fatalf("run /bin/true: %v", err)
		}
	}
	b.ReportMetric(float64(b.N*execRuns)/total.Seconds(), "tasks/s")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N*execRuns), "us/task")
	b.ReportMetric(other.Seconds()/total.Seconds(), "other-cores")
}

// TestEndToEndSmoke runs a small EndToEnd and DispatchLatency on SQLite so
// that the harness is exercised by the ordinary test run.
func TestEndToEndSmoke(t *testing.T) {
	h := newHarness(t, "sqlite")
	app := h.createApp(t)
	ps := h.startPilots(t, app.ID, 2, 2)
	in := make([]api.TaskInput, 40)
	for i := range in {
		in[i] = api.TaskInput{Body: fmt.Sprintf("smoke-%d", i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := h.client.TaskAdd(ctx, app.ID, &api.TaskAddRequest{Module: "noop", Tasks: in})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.waitOK(ctx, int64(len(in))); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.stop(); err != nil {
		t.Fatal(err)
	}
	for _, a := range h.attempts(t, r.IDs) {
		if a.ProgramStart.IsZero() || a.ProgramEnd.IsZero() || a.LeasedAt.IsZero() || a.RecordedAt.IsZero() {
			t.Fatalf("attempt of task %d lacks timestamps: %+v", a.TaskID, a)
		}
	}
}
