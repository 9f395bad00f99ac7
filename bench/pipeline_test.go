package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
)

// pipelineTasks is the number of items a Pipeline iteration sends through
// its three stages (each item is a task in each stage).
var pipelineTasks = envInt("SCALEBOX_BENCH_PIPELINE_TASKS", 100000)

// pipelineSlots is the number of slots each pilot gives each stage.
var pipelineSlots = envInt("SCALEBOX_BENCH_PIPELINE_SLOTS", 4)

// pipelineApp is a → b → c, each a Scalebox module with a run.sh: a and b
// pass their body on (a line in sink-tasks.txt goes to the first sink
// module), c ends the chain.
const pipelineApp = `
name: bench-pipeline
modules:
  a: {arguments: {code_path: %[1]s/pass}, sink_modules: [b]}
  b: {arguments: {code_path: %[1]s/pass}, sink_modules: [c]}
  c: {arguments: {code_path: %[1]s/last}}
`

var pipelineStages = []string{"a", "b", "c"}

// BenchmarkPipeline sends pipelineTasks items through a 3-stage pipeline of
// short real programs (a shell script per task), twice on a fresh store:
// stage by stage (the pilots serve one stage until all its tasks are OK,
// then the next: a workflow system without streaming), and streamed (the
// pilots serve all three stages at once, each item moving on as soon as
// its task ends). It reports both walls and their ratio: how well the
// stages overlap. Both use e2ePilots pilots with pipelineSlots slots per
// stage they serve.
func BenchmarkPipeline(b *testing.B) {
	for _, kind := range backends {
		b.Run(fmt.Sprintf("%s/tasks=%d", kind, pipelineTasks), func(b *testing.B) {
			benchPipeline(b, kind, pipelineTasks)
		})
	}
}

func benchPipeline(b *testing.B, kind string, n int) {
	yaml := fmt.Sprintf(pipelineApp, pipelineCode(b))
	inputs := make([]api.TaskInput, n)
	for j := range inputs {
		inputs[j] = api.TaskInput{Body: fmt.Sprintf("item-%07d", j)}
	}
	var (
		stages         = make([]time.Duration, len(pipelineStages))
		streamed, half time.Duration
	)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)

		// Stage by stage. The first stage's pilots are long-polling when
		// the items are added, as in the streamed run; a later stage's
		// tasks are all queued when its pilots start.
		h := newHarness(b, kind)
		app := h.createAppYAML(b, yaml)
		for s, mod := range pipelineStages {
			slots := map[string]int{mod: pipelineSlots}
			var ps *pilots
			if s == 0 {
				ps = h.startPilotsFor(b, app.ID, e2ePilots, slots)
			}
			b.StartTimer()
			start := time.Now()
			if s == 0 {
				addTasks(ctx, b, h, app.ID, mod, inputs, e2eBatch)
			} else {
				ps = h.runPilots(app.ID, e2ePilots, slots)
			}
			if err := h.st.waitOK(ctx, int64((s+1)*n)); err != nil {
				b.Fatalf("stage %s: %v", mod, err)
			}
			stages[s] += h.st.lastCommit().Sub(start)
			b.StopTimer()
			if _, err := ps.stop(); err != nil {
				b.Fatal(err)
			}
		}

		// Streamed.
		h = newHarness(b, kind)
		app = h.createAppYAML(b, yaml)
		slots := map[string]int{}
		for _, mod := range pipelineStages {
			slots[mod] = pipelineSlots
		}
		ps := h.startPilotsFor(b, app.ID, e2ePilots, slots)
		b.StartTimer()
		start := time.Now()
		addTasks(ctx, b, h, app.ID, pipelineStages[0], inputs, e2eBatch)
		// Half way, the stage-by-stage run has not started its last stage.
		if err := h.st.waitOK(ctx, int64(len(pipelineStages)*n/2)); err != nil {
			b.Fatalf("streamed: %v", err)
		}
		half += time.Since(start)
		if err := h.st.waitOK(ctx, int64(len(pipelineStages)*n)); err != nil {
			b.Fatalf("streamed: %v", err)
		}
		streamed += h.st.lastCommit().Sub(start)
		b.StopTimer()
		cancel()
		if _, err := ps.stop(); err != nil {
			b.Fatal(err)
		}
	}
	var sum time.Duration
	for s, d := range stages {
		sum += d
		b.ReportMetric(d.Seconds()/float64(b.N), "stage-"+pipelineStages[s]+"-s")
	}
	iters := float64(b.N)
	b.ReportMetric(sum.Seconds()/iters, "stage-sum-s")
	b.ReportMetric(streamed.Seconds()/iters, "streamed-s")
	b.ReportMetric(streamed.Seconds()/sum.Seconds(), "streamed/sum")
	b.ReportMetric(float64(len(pipelineStages)*n)*iters/streamed.Seconds(), "tasks/s")
	b.Logf("%s: %d items × %d stages, %d pilots × %d slots per stage: stage by stage %v (%v), streamed %v (half the tasks done after %v): streamed/sum %.2f",
		kind, n, len(pipelineStages), e2ePilots, pipelineSlots, (sum / time.Duration(b.N)).Round(time.Millisecond),
		stages, (streamed / time.Duration(b.N)).Round(time.Millisecond), (half / time.Duration(b.N)).Round(time.Millisecond),
		streamed.Seconds()/sum.Seconds())
}

// pipelineCode writes the stages' run.sh files and returns their parent.
func pipelineCode(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, script := range map[string]string{
		"pass": "#!/bin/sh\nprintf '%s\\n' \"$1\" > \"$WORK_DIR/sink-tasks.txt\"\n",
		"last": "#!/bin/sh\nexit 0\n",
	} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "run.sh"), []byte(script), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// addTasks adds inputs to a module in requests of batch tasks and returns
// their ids.
func addTasks(ctx context.Context, tb testing.TB, h *harness, appID int64, module string, inputs []api.TaskInput, batch int) []int64 {
	tb.Helper()
	ids := make([]int64, 0, len(inputs))
	for k := 0; k < len(inputs); k += batch {
		r, err := h.client.TaskAdd(ctx, appID, &api.TaskAddRequest{Module: module, Tasks: inputs[k:min(k+batch, len(inputs))]})
		if err != nil {
			tb.Fatalf("add tasks: %v", err)
		}
		ids = append(ids, r.IDs...)
	}
	return ids
}
