package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
)

// capacityTasks is the number of tasks per DispatchCapacity iteration.
var capacityTasks = envInt("SCALEBOX_BENCH_CAPACITY_TASKS", 100000)

// BenchmarkDispatchCapacity measures how many no-op tasks a broker process
// hands out and records per second: capacityTasks READY tasks are queued
// (not timed), then N simulated pilots in this process lease up to B tasks
// per request and report them all succeeded in one complete request, until
// every task is OK (with one task per request, a tenth of capacityTasks).
// No program runs: this is the broker's ceiling (HTTP,
// auth, JSON, store transactions), the part of BenchmarkEndToEnd that is
// not the pilots' work.
func BenchmarkDispatchCapacity(b *testing.B) {
	for _, kind := range backends {
		for _, pilots := range []int{1, 8, 64} {
			for _, batch := range []int{1, 100} {
				b.Run(fmt.Sprintf("%s/pilots=%d/batch=%d", kind, pilots, batch), func(b *testing.B) {
					n := capacityTasks
					if batch == 1 {
						n = max(n/10, 1) // one task per request: a tenth is enough for a steady rate
					}
					benchCapacity(b, kind, pilots, batch, n)
				})
			}
		}
	}
}

func benchCapacity(b *testing.B, kind string, nPilots, batch, nTasks int) {
	var (
		wall, brokerCPU, pgCPU, selfCPU, other time.Duration
		pgKnown                                = true
		total                                  int
		leaseD, completeD, hbD                 dist
	)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ctx := context.Background()
		br := startBroker(b, kind)
		app, moduleID := br.createApp(b)
		token := br.pilotToken(b)
		t0 := time.Now()
		br.addTasks(b, app.ID, "cap", nTasks)
		fill := time.Since(t0)
		pilots := make([]*simPilot, nPilots)
		for j := range pilots {
			// A client (a transport, a connection) per pilot, as pilots
			// are processes of their own.
			p, err := registerSim(ctx, api.NewClient(br.url, token), fmt.Sprintf("sim-node-%03d", j), batch)
			if err != nil {
				b.Fatal(err)
			}
			pilots[j] = p
		}
		runtime.GC()

		runCtx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		var (
			done     atomic.Int64
			endAt    atomic.Pointer[time.Time]
			errs     firstError
			wg, hbWG sync.WaitGroup
			leases   = make([]dist, nPilots)
			compls   = make([]dist, nPilots)
			hbs      sampler
		)
		hbCtx, stopHB := context.WithCancel(ctx)
		for _, p := range pilots {
			hbWG.Add(1)
			go func() {
				defer hbWG.Done()
				if err := p.heartbeater(hbCtx, &hbs); err != nil {
					errs.set(err)
					cancel()
				}
			}()
		}
		cpu0, bcpu0 := readCPU(), br.cpu(b)
		b.StartTimer()
		start := time.Now()
		for j, p := range pilots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for runCtx.Err() == nil {
					l0 := time.Now()
					// A pilot's long poll: the queue is full, so it returns
					// at once, until the last tasks are out.
					tasks, err := p.lease(runCtx, moduleID, batch, 30*time.Second)
					if err != nil {
						if runCtx.Err() == nil {
							errs.set(fmt.Errorf("lease: %w", err))
							cancel()
						}
						return
					}
					if len(tasks) == 0 {
						continue // a poll that ran out (the last tasks are out)
					}
					c0 := time.Now()
					leases[j] = append(leases[j], c0.Sub(l0))
					if err := p.complete(runCtx, tasks); err != nil {
						if runCtx.Err() == nil {
							errs.set(err)
							cancel()
						}
						return
					}
					now := time.Now()
					compls[j] = append(compls[j], now.Sub(c0))
					if done.Add(int64(len(tasks))) == int64(nTasks) {
						endAt.Store(&now)
						cancel() // ends the other pilots' polls
					}
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		cpu1, bcpu1 := readCPU(), br.cpu(b)
		stopHB()
		hbWG.Wait()
		cancel()
		if err := errs.get(); err != nil {
			b.Fatalf("%v\nbroker log:\n%s", err, br.out)
		}
		end := endAt.Load()
		if end == nil || done.Load() != int64(nTasks) {
			b.Fatalf("%d of %d tasks done", done.Load(), nTasks)
		}
		a, err := br.admin.AppGet(ctx, app.ID)
		if err != nil {
			b.Fatal(err)
		}
		if ok := a.Modules[0].Counts["OK"]; ok != int64(nTasks) {
			b.Fatalf("broker counts %d tasks OK of %d: %v", ok, nTasks, a.Modules[0].Counts)
		}
		w := end.Sub(start)
		d := cpu1.sub(cpu0)
		bc := bcpu1 - bcpu0
		wall += w
		brokerCPU += bc
		pgCPU += d.postgres
		pgKnown = pgKnown && d.pgKnown
		selfCPU += d.self
		other += time.Duration(otherCores(d.machine, d.self, bc, d.postgres, w) * float64(w))
		total += nTasks
		for j := range pilots {
			leaseD = append(leaseD, leases[j]...)
			completeD = append(completeD, compls[j]...)
		}
		hbD = append(hbD, hbs.take()...)
		b.Logf("iteration %d: %d tasks in %v (queue filled in %v, %.0f tasks/s)", i, nTasks, w.Round(time.Millisecond),
			fill.Round(time.Millisecond), float64(nTasks)/fill.Seconds())
		br.stop(b)
	}
	perTask := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(total) }
	b.ReportMetric(float64(total)/wall.Seconds(), "tasks/s")
	b.ReportMetric(perTask(brokerCPU), "broker-cpu-us/task")
	if kind == "postgres" && pgKnown {
		b.ReportMetric(perTask(pgCPU), "pg-cpu-us/task")
	}
	b.ReportMetric(perTask(selfCPU), "pilots-cpu-us/task")
	b.ReportMetric(other.Seconds()/wall.Seconds(), "other-cores")
	pg := "n/a"
	if kind == "postgres" && pgKnown {
		pg = fmt.Sprintf("%.1f cores", pgCPU.Seconds()/wall.Seconds())
	}
	b.Logf("%s, %d simulated pilots leasing up to %d tasks per request, %d tasks: %.0f tasks/s; broker %.1f cores, PostgreSQL %s, "+
		"simulated pilots %.1f cores, other processes %.2f cores (CPU %s, %d cores, load average %s)\n%s",
		kind, nPilots, batch, total, float64(total)/wall.Seconds(), brokerCPU.Seconds()/wall.Seconds(), pg,
		selfCPU.Seconds()/wall.Seconds(), other.Seconds()/wall.Seconds(), cpuModel(), runtime.NumCPU(), loadAvg(),
		sampleTable([]string{"lease request", "complete request", "heartbeat request"},
			map[string]dist{"lease request": leaseD, "complete request": completeD, "heartbeat request": hbD}))
}
