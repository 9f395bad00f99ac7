package storetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/store"
)

// Bench runs the store benchmarks. b.N counts tasks, so ns/op is the cost
// per task; each benchmark also reports tasks/s.
//
//   - LeaseComplete: lease 500 tasks, complete them (one attempt row each), repeat.
//   - LeaseCompleteEmit: the same, each completion emitting one message.
//   - AddBatch5000: add tasks in batches of 5,000
//     (go test -bench AddBatch -benchtime=1000000x adds one million).
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("LeaseComplete", func(b *testing.B) { benchLeaseComplete(b, open, false) })
	b.Run("LeaseCompleteEmit", func(b *testing.B) { benchLeaseComplete(b, open, true) })
	b.Run("AddBatch5000", func(b *testing.B) { benchAdd(b, open, 5000) })
}

// BenchBatch is the lease/complete batch size of Bench.
const BenchBatch = 500

func openBench(b *testing.B, open func(b *testing.B) store.Store) store.Store {
	b.Helper()
	s := open(b)
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Errorf("close store: %v", err)
		}
	})
	return s
}

// addInputs makes n READY tasks for module mod.
func addInputs(mod int64, prefix string, n int) []store.TaskInput {
	in := make([]store.TaskInput, n)
	for i := range in {
		in[i] = store.TaskInput{
			ModuleID: mod,
			Body:     fmt.Sprintf("%s/file-%09d.dat", prefix, i),
			Headers:  `{"from_module":"scatter","sort_tag":"1"}`,
			Status:   store.StatusReady,
		}
	}
	return in
}

func addAll(b *testing.B, s store.Store, appID int64, in []store.TaskInput, batch int) {
	b.Helper()
	for len(in) > 0 {
		n := min(batch, len(in))
		if _, err := s.TaskAdd(context.Background(), store.TaskAddParams{AppID: appID, Tasks: in[:n], Now: T0}); err != nil {
			b.Fatalf("add tasks: %v", err)
		}
		in = in[n:]
	}
}

func benchLeaseComplete(b *testing.B, open func(b *testing.B) store.Store, emit bool) {
	s := openBench(b, open)
	f := newFixture(b, s)
	ctx := context.Background()
	addAll(b, s, f.app.ID, addInputs(f.mod["a"], "in", b.N), 10000)
	cs := make([]store.Completion, 0, BenchBatch)
	now := T0
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	done := 0
	for done < b.N {
		now = now.Add(time.Millisecond)
		ls, err := s.TaskLease(ctx, store.TaskLeaseParams{
			PilotID: f.pilot,
			Modules: []store.ModuleLease{{ModuleID: f.mod["a"], Max: BenchBatch}},
			TTL:     time.Minute,
			Now:     now,
		})
		if err != nil {
			b.Fatalf("lease: %v", err)
		}
		if len(ls) == 0 {
			b.Fatalf("lease: nothing to lease after %d of %d tasks", done, b.N)
		}
		cs = cs[:0]
		for _, l := range ls {
			c := store.Completion{
				TaskID: l.TaskID, Attempt: l.Attempt, PilotID: f.pilot, Code: 0, Kind: store.KindApp,
				Record: store.Attempt{
					Host: "n1", Slot: "0", Stdout: "processed " + l.Body, InputBytes: 1 << 20, OutputBytes: 1 << 19,
					CPUUser: 250 * time.Millisecond, MaxRSS: 64 << 20,
					StartedAt: now, ProgramStart: now, ProgramEnd: now, ReportedAt: now,
					Extra: map[string]any{"runtime": "host"},
				},
			}
			if emit {
				c.Messages = []store.TaskInput{{ModuleID: f.mod["b"], Body: l.Body, Headers: `{"from_module":"a"}`, Status: store.StatusReady}}
			}
			cs = append(cs, c)
		}
		res, err := s.TaskComplete(ctx, store.TaskCompleteParams{Completions: cs, Now: now})
		if err != nil {
			b.Fatalf("complete: %v", err)
		}
		for i, r := range res {
			if !r.Applied {
				b.Fatalf("completion %d of task %d not applied", i, cs[i].TaskID)
			}
		}
		done += len(ls)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
}

func benchAdd(b *testing.B, open func(b *testing.B) store.Store, batch int) {
	s := openBench(b, open)
	f := newFixture(b, s)
	in := addInputs(f.mod["a"], "bench", b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	addAll(b, s, f.app.ID, in, batch)
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
}
