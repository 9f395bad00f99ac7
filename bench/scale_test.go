package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
)

// Knobs of the scale benchmarks (environment variables), with defaults.
var (
	scaleMax    = envInt("SCALEBOX_BENCH_SCALE_MAX", 1000000) // largest queue of QueueScale
	idleSeconds = envInt("SCALEBOX_BENCH_IDLE_SECONDS", 30)   // IdlePilots' measurement window
	idlePilots  = envInt("SCALEBOX_BENCH_IDLE_PILOTS", 1000)  // long-polling pilots of IdlePilots
)

// scaleLeases is how many lease+complete round trips QueueScale times.
const scaleLeases = 1000

// BenchmarkQueueScale queues 10k, 100k and 1M READY tasks (powers of ten
// up to SCALEBOX_BENCH_SCALE_MAX, and that number itself) in a fresh
// broker process, then times one pilot leasing one task and completing it,
// 1000 times in a row, and reads the broker's resident memory: how
// dispatch and memory grow with the backlog.
func BenchmarkQueueScale(b *testing.B) {
	var sizes []int // 10k, 100k, 1M, … up to scaleMax, and scaleMax itself
	for n := 10000; n <= scaleMax; n *= 10 {
		sizes = append(sizes, n)
	}
	if len(sizes) == 0 || sizes[len(sizes)-1] != scaleMax {
		sizes = append(sizes, scaleMax)
	}
	for _, kind := range backends {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("%s/queued=%d", kind, n), func(b *testing.B) { benchQueueScale(b, kind, n) })
		}
	}
}

func benchQueueScale(b *testing.B, kind string, queued int) {
	var (
		leaseD, completeD             dist
		rss, perTask, addRate, cpuUS  float64
		heapIdle, heapQueued, idleRSS float64
		memIdle, memQueued            procMem
		leaseWall, brokerCPU          time.Duration
		heapNames                     = []string{"go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes"}
		mIdle, mQueued                map[string]float64
		iterations                    int
	)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ctx := context.Background()
		br := startBroker(b, kind)
		app, moduleID := br.createApp(b)
		token := br.pilotToken(b)
		p, err := registerSim(ctx, api.NewClient(br.url, token), "sim-node-000", 1)
		if err != nil {
			b.Fatal(err)
		}
		hbCtx, stopHB := context.WithCancel(ctx)
		var hbErr firstError
		hbDone := make(chan struct{})
		go func() {
			defer close(hbDone)
			if err := p.heartbeater(hbCtx, nil); err != nil {
				hbErr.set(err)
			}
		}()
		// The idle broker: its app and pilot, and the requests it serves
		// later once already served on an empty queue.
		for range 10 {
			if ts, err := p.lease(ctx, moduleID, 1, 0); err != nil || len(ts) != 0 {
				b.Fatalf("lease on an empty queue: %v %v", ts, err)
			}
		}
		memIdle, mIdle = br.mem(b), br.metric(heapNames...)

		t0 := time.Now()
		br.addTasks(b, app.ID, "queued", queued)
		add := time.Since(t0)
		runtime.GC()

		c0 := br.cpu(b)
		b.StartTimer()
		start := time.Now()
		for j := range scaleLeases {
			l0 := time.Now()
			ts, err := p.lease(ctx, moduleID, 1, 30*time.Second)
			l1 := time.Now()
			if err != nil || len(ts) != 1 {
				b.Fatalf("lease %d: %d tasks, %v\nbroker log:\n%s", j, len(ts), err, br.out)
			}
			if err := p.complete(ctx, ts); err != nil {
				b.Fatalf("complete %d: %v", j, err)
			}
			leaseD = append(leaseD, l1.Sub(l0))
			completeD = append(completeD, time.Since(l1))
		}
		leaseWall += time.Since(start)
		b.StopTimer()
		brokerCPU += br.cpu(b) - c0
		memQueued, mQueued = br.mem(b), br.metric(heapNames...)
		stopHB()
		<-hbDone
		if err := hbErr.get(); err != nil {
			b.Fatal(err)
		}
		br.alive(b)

		iterations++
		rss += mb(memQueued.rss)
		idleRSS += mb(memIdle.rss)
		perTask += float64(memQueued.rss-memIdle.rss) / float64(queued)
		addRate += float64(queued) / add.Seconds()
		heapIdle += mIdle["go_memstats_heap_inuse_bytes"]
		heapQueued += mQueued["go_memstats_heap_inuse_bytes"]
		b.Logf("iteration %d: %d tasks queued in %v (%.0f tasks/s); idle broker %s, Go heap in use %.1f MB; "+
			"with the queue %s, Go heap in use %.1f MB, Go runtime total %.1f MB", i, queued, add.Round(time.Millisecond),
			float64(queued)/add.Seconds(), memIdle, mIdle["go_memstats_heap_inuse_bytes"]/(1<<20), memQueued,
			mQueued["go_memstats_heap_inuse_bytes"]/(1<<20), mQueued["go_memstats_sys_bytes"]/(1<<20))
		br.stop(b)
	}
	n := float64(iterations)
	ls := leaseD.sorted()
	b.ReportMetric(ms(ls.q(.5)), "lease-p50-ms")
	b.ReportMetric(ms(ls.q(.99)), "lease-p99-ms")
	b.ReportMetric(rss/n, "rss-mb")
	b.ReportMetric(perTask/n, "bytes/queued-task")
	b.ReportMetric(addRate/n, "add-tasks/s")
	cpuUS = float64(brokerCPU.Microseconds()) / float64(iterations*scaleLeases)
	b.ReportMetric(cpuUS, "broker-cpu-us/lease")
	b.Logf("%s, %d tasks queued: lease+complete of one task %d times in %v (broker CPU %.0f µs per round trip); "+
		"broker RSS %.1f MB idle → %.1f MB with the queue (%.0f bytes per queued task), Go heap in use %.1f → %.1f MB\n%s",
		kind, queued, scaleLeases, (leaseWall / time.Duration(iterations)).Round(time.Millisecond), cpuUS,
		idleRSS/n, rss/n, perTask/n, heapIdle/n/(1<<20), heapQueued/n/(1<<20),
		sampleTable([]string{"lease request (1 task)", "complete request"},
			map[string]dist{"lease request (1 task)": leaseD, "complete request": completeD}))
}

// BenchmarkIdlePilots has idlePilots simulated pilots registered and
// long-polling an app with a module and no tasks, heartbeating as pilot.Run
// does, and measures over a fixed window of idleSeconds what keeping them
// costs the broker: CPU (in cores), resident memory, heartbeats served.
// Then it adds 100 tasks and checks that the waiting pilots take them all.
func BenchmarkIdlePilots(b *testing.B) {
	for _, kind := range backends {
		b.Run(fmt.Sprintf("%s/pilots=%d", kind, idlePilots), func(b *testing.B) {
			benchIdle(b, kind, idlePilots, time.Duration(idleSeconds)*time.Second)
		})
	}
}

// idleWait is the wait pilots ask for: the broker's longest long poll
// (broker.Config.MaxWait, 60 s by default; a longer request gets 60 s).
const idleWait = 60 * time.Second

// idleWake is how many tasks the end check adds.
const idleWake = 100

func benchIdle(b *testing.B, kind string, n int, window time.Duration) {
	// A connection per pilot on this side and on the broker's (which
	// inherits the limit).
	if lim, err := raiseNoFile(uint64(4*n + 1024)); err != nil || lim < uint64(2*n+256) {
		b.Fatalf("RLIMIT_NOFILE %d is too low for %d pilots (%v)", lim, n, err)
	}
	var (
		brokerCores, pgCores, selfCores, other, rss, hbRate float64
		hbD, wakeD                                          dist
		iterations                                          int
	)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ctx := context.Background()
		br := startBroker(b, kind)
		app, moduleID := br.createApp(b)
		token := br.pilotToken(b)
		// One transport for every simulated pilot, with room for a kept
		// connection each (a long poll and a heartbeat may overlap).
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        0, // no limit
			MaxIdleConnsPerHost: 2 * n,
			IdleConnTimeout:     2 * time.Minute,
		}
		rc := api.NewClientWith(br.url, token, &http.Client{Transport: tr})

		t0 := time.Now()
		pilots := make([]*simPilot, n)
		var next atomic.Int64
		var regErr firstError
		var regWG sync.WaitGroup
		for range 8 {
			regWG.Add(1)
			go func() {
				defer regWG.Done()
				for j := int(next.Add(1) - 1); j < n; j = int(next.Add(1) - 1) {
					p, err := registerSim(ctx, rc, fmt.Sprintf("idle-node-%04d", j), 1)
					if err != nil {
						regErr.set(err)
						return
					}
					pilots[j] = p
				}
			}()
		}
		regWG.Wait()
		if err := regErr.get(); err != nil {
			b.Fatal(err)
		}
		registered := time.Since(t0)

		runCtx, cancel := context.WithCancel(ctx)
		var (
			errs      firstError
			failed    = make(chan struct{})
			failOnce  sync.Once
			wg        sync.WaitGroup
			sent      sync.WaitGroup // each pilot's first lease request written
			hbs       sampler
			addAt     atomic.Pointer[time.Time]
			leased    atomic.Int64
			completed atomic.Int64
			allDone   = make(chan struct{})
			wakeMu    sync.Mutex
			wakeTimes dist
			oldPolls  atomic.Int64 // tasks leased by a poll that began before the add
		)
		fail := func(err error) {
			errs.set(err)
			failOnce.Do(func() { close(failed) })
		}
		sent.Add(n)
		for _, p := range pilots {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := p.heartbeater(runCtx, &hbs); err != nil {
					fail(err)
				}
			}()
			go func() {
				defer wg.Done()
				var once sync.Once
				trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(sent.Done) }}
				pollCtx := httptrace.WithClientTrace(runCtx, trace)
				for runCtx.Err() == nil {
					began := time.Now()
					ts, err := p.lease(pollCtx, moduleID, 1, idleWait)
					if err != nil {
						once.Do(sent.Done)
						if runCtx.Err() == nil {
							fail(fmt.Errorf("lease of pilot %d: %w", p.id, err))
						}
						return
					}
					if len(ts) == 0 {
						continue // the long poll ran out: poll again
					}
					got := time.Now()
					if at := addAt.Load(); at != nil {
						wakeMu.Lock()
						wakeTimes = append(wakeTimes, got.Sub(*at))
						wakeMu.Unlock()
						if began.Before(*at) {
							oldPolls.Add(1)
						}
					}
					leased.Add(int64(len(ts)))
					if err := p.complete(runCtx, ts); err != nil {
						fail(err)
						return
					}
					if completed.Add(int64(len(ts))) == idleWake {
						close(allDone)
					}
					return // one slot, one task: this pilot is done
				}
			}()
		}
		sentCh := make(chan struct{})
		go func() { sent.Wait(); close(sentCh) }()
		select {
		case <-sentCh:
		case <-failed:
			cancel()
			b.Fatalf("%v\nbroker log:\n%s", errs.get(), br.out)
		case <-time.After(5 * time.Minute):
			cancel()
			b.Fatalf("the pilots' first lease requests not sent within 5 minutes")
		}
		polling := time.Since(t0)

		// The measurement window: a fixed time, during which nothing but
		// the pilots' long polls and heartbeats reach the broker.
		cpu0, bcpu0, hb0 := readCPU(), br.cpu(b), hbs.count()
		b.StartTimer()
		start := time.Now()
		select {
		case <-time.After(window):
		case <-failed:
		}
		w := time.Since(start)
		b.StopTimer()
		cpu1, bcpu1, hb1 := readCPU(), br.cpu(b), hbs.count()
		mem := br.mem(b)
		threads, fds := procThreads(br.pid), procFDs(br.pid)
		gm := br.metric("go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
		if err := errs.get(); err != nil {
			cancel()
			b.Fatalf("during the window: %v\nbroker log:\n%s", err, br.out)
		}

		// The end check: work added now goes to pilots that are waiting.
		now := time.Now()
		addAt.Store(&now)
		br.addTasks(b, app.ID, "wake", idleWake)
		select {
		case <-allDone:
		case <-failed:
		case <-time.After(time.Minute):
		}
		wakeAll := time.Since(now)
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
		if err := errs.get(); err != nil {
			b.Fatalf("after adding %d tasks: %v\nbroker log:\n%s", idleWake, err, br.out)
		}
		if c := completed.Load(); c != idleWake || leased.Load() != idleWake {
			b.Fatalf("%d tasks added to %d waiting pilots: %d leased, %d completed within a minute", idleWake, n, leased.Load(), c)
		}
		br.alive(b)

		d := cpu1.sub(cpu0)
		bc := bcpu1 - bcpu0
		iterations++
		brokerCores += bc.Seconds() / w.Seconds()
		if d.pgKnown {
			pgCores += d.postgres.Seconds() / w.Seconds()
		}
		selfCores += d.self.Seconds() / w.Seconds()
		other += otherCores(d.machine, d.self, bc, d.postgres, w)
		rss += mb(mem.rss)
		hbRate += float64(hb1-hb0) / w.Seconds()
		hbD = append(hbD, hbs.take()...)
		wakeD = append(wakeD, wakeTimes...)
		b.Logf("iteration %d: %d pilots registered in %v, all polling after %v; window %v: broker %.3f cores, %s (Go heap in use %.1f MB, "+
			"stacks %.1f MB, %.0f goroutines), %d threads, %d open files, %d heartbeats; end check: %d tasks added, all leased and completed after %v, %d of them by polls "+
			"older than the add", i, n, registered.Round(time.Millisecond), polling.Round(time.Millisecond), w.Round(time.Millisecond),
			bc.Seconds()/w.Seconds(), mem, gm["go_memstats_heap_inuse_bytes"]/(1<<20), gm["go_memstats_stack_inuse_bytes"]/(1<<20),
			gm["go_goroutines"], threads, fds, hb1-hb0, idleWake, wakeAll.Round(time.Millisecond), oldPolls.Load())
		br.stop(b)
	}
	k := float64(iterations)
	b.ReportMetric(brokerCores/k, "broker-cores")
	if kind == "postgres" {
		b.ReportMetric(pgCores/k, "pg-cores")
	}
	b.ReportMetric(rss/k, "rss-mb")
	b.ReportMetric(hbRate/k, "heartbeats/s")
	hs, ws := hbD.sorted(), wakeD.sorted()
	b.ReportMetric(ms(hs.q(.99)), "heartbeat-p99-ms")
	b.ReportMetric(ms(ws.q(1)), "wake-max-ms")
	b.ReportMetric(other/k, "other-cores")
	b.Logf("%s, %d idle pilots long-polling (%v) and heartbeating: broker %.3f cores, PostgreSQL %.3f cores, "+
		"simulated pilots %.3f cores, other processes %.2f cores (load average %s); broker RSS %.1f MB; %.0f heartbeats/s\n%s",
		kind, n, idleWait, brokerCores/k, pgCores/k, selfCores/k, other/k, loadAvg(), rss/k, hbRate/k,
		sampleTable([]string{"heartbeat request", "add → leased (end check)"},
			map[string]dist{"heartbeat request": hbD, "add → leased (end check)": wakeD}))
}

// procThreads is the number of threads of a process (0 if unknown).
func procThreads(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	var n int
	for _, line := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(line, "Threads: %d", &n); err == nil {
			return n
		}
	}
	return 0
}

// procFDs is the number of open files of a process (0 if unknown).
func procFDs(pid int) int {
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0
	}
	return len(es)
}
