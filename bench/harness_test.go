package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/pilot"
	"github.com/scalebox-hpc/scalebox/store"
	"github.com/scalebox-hpc/scalebox/store/postgres"
	"github.com/scalebox-hpc/scalebox/store/sqlite"
)

// noopApp is one module whose program is /bin/true, exec'd directly by the
// pilot's host runtime with argv (body, headers).
const noopApp = `
name: bench-noop
modules:
  noop:
    command: /bin/true
`

// envInt reads a positive integer knob from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// backends are the stores the end-to-end benchmarks run on.
var backends = []string{"sqlite", "postgres"}

// openStore opens a fresh, empty store of the given kind; it is closed when
// tb ends (a PostgreSQL database is dropped after that).
func openStore(tb testing.TB, kind string) store.Store {
	tb.Helper()
	ctx := context.Background()
	var (
		st  store.Store
		err error
	)
	switch kind {
	case "sqlite":
		st, err = sqlite.Open(ctx, filepath.Join(tb.TempDir(), "scalebox.db"))
	case "postgres":
		st, err = postgres.Open(ctx, pgtest.DSN(tb))
	default:
		err = fmt.Errorf("unknown store %q", kind)
	}
	if err != nil {
		tb.Fatalf("open %s store: %v", kind, err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// watchStore passes everything through to the real store and notes, for
// each task, when its lease and its successful completion returned from the
// store (that is, after the commit). It lets the benchmark see the moment
// the last task is recorded without polling the broker.
type watchStore struct {
	store.Store

	ok     atomic.Int64 // completions applied with status OK
	failed atomic.Int64 // completions applied with any other final status
	signal chan struct{}

	mu        sync.Mutex
	committed map[int64]time.Time // task → when TaskComplete returned
	leased    map[int64]time.Time // task → when TaskLease returned it
	calls     map[string]*callStats
}

// callStats describes the calls of one store method (or HTTP route).
type callStats struct {
	n, items int
	took     dist
}

func (w *watchStore) note(name string, items int, took time.Duration) {
	c := w.calls[name]
	if c == nil {
		c = &callStats{}
		w.calls[name] = c
	}
	c.n++
	c.items += items
	c.took = append(c.took, took)
}

// resetCalls forgets the call statistics (after the setup).
func (w *watchStore) resetCalls() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = map[string]*callStats{}
}

// callTable renders the call statistics.
func (w *watchStore) callTable() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := make([]string, 0, len(w.calls))
	for n := range w.calls {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "%-26s %7s %10s %9s %9s %9s\n", "call (ms)", "calls", "items/call", "p50", "p99", "max")
	for _, n := range names {
		c := w.calls[n]
		s := c.took.sorted()
		fmt.Fprintf(&b, "%-26s %7d %10.1f %9.3f %9.3f %9.3f\n", n, c.n, float64(c.items)/float64(max(1, c.n)),
			ms(s.q(.5)), ms(s.q(.99)), ms(s.q(1)))
	}
	return b.String()
}

func newWatchStore(st store.Store) *watchStore {
	return &watchStore{Store: st, signal: make(chan struct{}, 1),
		committed: map[int64]time.Time{}, leased: map[int64]time.Time{}, calls: map[string]*callStats{}}
}

func (w *watchStore) TaskLease(ctx context.Context, p store.TaskLeaseParams) ([]*store.Lease, error) {
	start := time.Now()
	ls, err := w.Store.TaskLease(ctx, p)
	now := time.Now()
	w.mu.Lock()
	for _, l := range ls {
		w.leased[l.TaskID] = now
	}
	name := "store.TaskLease (empty)"
	if len(ls) > 0 {
		name = "store.TaskLease"
	}
	w.note(name, len(ls), now.Sub(start))
	w.mu.Unlock()
	return ls, err
}

func (w *watchStore) TaskComplete(ctx context.Context, p store.TaskCompleteParams) ([]store.CompleteResult, error) {
	start := time.Now()
	res, err := w.Store.TaskComplete(ctx, p)
	if err != nil {
		return res, err
	}
	now := time.Now()
	var ok, failed int64
	w.mu.Lock()
	w.note("store.TaskComplete", len(p.Completions), now.Sub(start))
	for i, r := range res {
		if !r.Applied {
			continue
		}
		switch {
		case r.Status == store.StatusOK:
			ok++
			w.committed[p.Completions[i].TaskID] = now
		case store.IsFinal(r.Status):
			failed++
		}
	}
	w.mu.Unlock()
	w.ok.Add(ok)
	w.failed.Add(failed)
	select {
	case w.signal <- struct{}{}:
	default:
	}
	return res, nil
}

// waitOK waits until at least n tasks completed OK and returns the time the
// n-th completion was committed.
func (w *watchStore) waitOK(ctx context.Context, n int64) error {
	for w.ok.Load() < n {
		if f := w.failed.Load(); f > 0 {
			return fmt.Errorf("%d tasks failed", f)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d tasks OK: %w", w.ok.Load(), n, ctx.Err())
		case <-w.signal:
		}
	}
	return nil
}

func (w *watchStore) times(id int64) (leased, committed time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.leased[id], w.committed[id]
}

// lastCommit is the latest commit time seen.
func (w *watchStore) lastCommit() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	for _, t := range w.committed {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// harness is a broker over real HTTP on 127.0.0.1 with a watched store.
type harness struct {
	kind   string
	st     *watchStore
	brk    *broker.Broker
	url    string
	client *api.Client
	dir    string // parent of the pilots' scratch dirs (SCALEBOX_BENCH_SCRATCH, else a temporary dir)
}

// newHarness starts a broker on a fresh store of the given kind. The HTTP
// server's goroutines carry the pprof label role=broker, so a CPU profile
// can be split with -tagfocus role=broker / role=pilot / role=client.
func newHarness(tb testing.TB, kind string) *harness {
	tb.Helper()
	ctx := context.Background()
	st := newWatchStore(openStore(tb, kind))
	brk := broker.New(st, broker.Config{}, zap.NewNop())
	if err := brk.Start(ctx); err != nil {
		tb.Fatalf("start broker: %v", err)
	}
	h := brk.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		pprof.Do(r.Context(), pprof.Labels("role", "broker"), func(context.Context) { h.ServeHTTP(w, r) })
		route := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		switch route {
		case "lease", "complete", "heartbeat", "tasks":
			st.mu.Lock()
			st.note("http "+r.Method+" …/"+route, 0, time.Since(start))
			st.mu.Unlock()
		}
	}))
	pprof.Do(ctx, pprof.Labels("role", "broker"), func(context.Context) { srv.Start() })
	tb.Cleanup(func() { brk.Close(); srv.Close() })
	dir := tb.TempDir()
	if base := os.Getenv("SCALEBOX_BENCH_SCRATCH"); base != "" {
		var err error
		if dir, err = os.MkdirTemp(base, "scalebox-bench-"); err != nil {
			tb.Fatalf("scratch: %v", err)
		}
		tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	return &harness{kind: kind, st: st, brk: brk, url: srv.URL, client: api.NewClient(srv.URL, ""), dir: dir}
}

func (h *harness) createApp(tb testing.TB) *api.App {
	tb.Helper()
	return h.createAppYAML(tb, noopApp)
}

func (h *harness) createAppYAML(tb testing.TB, yaml string) *api.App {
	tb.Helper()
	a, err := h.client.AppCreate(context.Background(), &api.AppCreateRequest{YAML: yaml})
	if err != nil {
		tb.Fatalf("create app: %v", err)
	}
	return a
}

// pilots runs n pilots in this process, each with the given slots for the
// module noop, and waits until each is long-polling. stop ends them and
// returns what they did.
type pilots struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stats  []*pilot.Stats
	errs   []error
}

func (h *harness) startPilots(tb testing.TB, appID int64, n, slots int) *pilots {
	tb.Helper()
	return h.startPilotsFor(tb, appID, n, map[string]int{"noop": slots})
}

// startPilotsFor runs n pilots with the given slots per module and waits
// until each is long-polling.
func (h *harness) startPilotsFor(tb testing.TB, appID int64, n int, slots map[string]int) *pilots {
	tb.Helper()
	ps := h.runPilots(appID, n, slots)
	deadline := time.Now().Add(30 * time.Second)
	for h.brk.Waiting() < n {
		if time.Now().After(deadline) {
			_, _ = ps.stop()
			tb.Fatalf("pilots not long-polling after 30 s (waiting: %d of %d; errors: %v)", h.brk.Waiting(), n, ps.errs)
		}
		time.Sleep(time.Millisecond)
	}
	return ps
}

// runPilots starts n pilots with the given slots per module.
func (h *harness) runPilots(appID int64, n int, slots map[string]int) *pilots {
	ctx, cancel := context.WithCancel(context.Background())
	ps := &pilots{cancel: cancel, stats: make([]*pilot.Stats, n), errs: make([]error, n)}
	for i := range n {
		ps.wg.Add(1)
		go pprof.Do(ctx, pprof.Labels("role", "pilot"), func(ctx context.Context) {
			defer ps.wg.Done()
			ps.stats[i], ps.errs[i] = pilot.Run(ctx, pilot.Config{
				Broker: h.url, AppID: appID, Slots: slots, Prefetch: e2ePrefetch,
				Host: fmt.Sprintf("bench-node-%d", i), IP: "127.0.0.1",
				Scratch: filepath.Join(h.dir, "scratch"), Grace: 30 * time.Second, Log: zap.NewNop(),
			})
		})
	}
	return ps
}

func (ps *pilots) stop() (succeeded []int64, err error) {
	ps.cancel()
	ps.wg.Wait()
	for i, s := range ps.stats {
		if ps.errs[i] != nil {
			err = fmt.Errorf("pilot %d: %w", i, ps.errs[i])
		}
		if s != nil {
			succeeded = append(succeeded, s.Succeeded.Load())
		}
	}
	return succeeded, err
}

// attempts reads the OK attempt of every task straight from the store
// (after the measurement), with a few readers in parallel.
func (h *harness) attempts(tb testing.TB, ids []int64) []*store.Attempt {
	tb.Helper()
	out := make([]*store.Attempt, len(ids))
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) {
					return
				}
				as, err := h.st.AttemptList(context.Background(), ids[i])
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				for _, a := range as {
					if a.Kind == store.KindApp && a.Code == store.StatusOK {
						out[i] = a
					}
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		tb.Fatalf("read attempts: %v", err)
	}
	for i, a := range out {
		if a == nil {
			tb.Fatalf("task %d has no OK attempt", ids[i])
		}
	}
	return out
}

// dist is a sample of durations.
type dist []time.Duration

func (d dist) sorted() dist {
	s := append(dist(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

// q returns the q-quantile (nearest rank) of a sorted sample.
func (d dist) q(q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// table renders named samples as p50/p90/p99/max in milliseconds.
func table(rows []string, samples map[string]dist) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %9s %9s %9s %9s\n", "interval (ms)", "p50", "p90", "p99", "max")
	for _, name := range rows {
		s := samples[name].sorted()
		fmt.Fprintf(&b, "%-34s %9.3f %9.3f %9.3f %9.3f\n", name, ms(s.q(.5)), ms(s.q(.9)), ms(s.q(.99)), ms(s.q(1)))
	}
	return b.String()
}

// cpuTimes is CPU time consumed so far: by this process (broker, pilots,
// benchmark client), by its reaped children (the module programs) and by
// the private PostgreSQL server of pgtest, if there is one.
type cpuTimes struct {
	self, children, postgres time.Duration
	pgKnown                  bool
	machine                  time.Duration // busy time of all CPUs, every process (/proc/stat)
}

// foreign is the CPU time other processes of the machine used: anything
// above zero means the figures were taken on a machine that was not quiet.
func (c cpuTimes) foreign() time.Duration {
	f := c.machine - c.self - c.children - c.postgres
	return max(0, f)
}

func readCPU() cpuTimes {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	c := cpuTimes{
		self:     time.Duration(self.Utime.Nano() + self.Stime.Nano()),
		children: time.Duration(kids.Utime.Nano() + kids.Stime.Nano()),
	}
	c.postgres, c.pgKnown = postgresCPU()
	c.machine = machineBusy()
	return c
}

// machineBusy is the busy time of all CPUs since boot: user, nice, system,
// irq and softirq (not idle, iowait or steal).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * clockTick
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{self: c.self - o.self, children: c.children - o.children,
		postgres: c.postgres - o.postgres, pgKnown: c.pgKnown && o.pgKnown, machine: c.machine - o.machine}
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times (100 on Linux).
const clockTick = 10 * time.Millisecond

// postgresCPU sums the CPU time of the private PostgreSQL server that
// pgtest started as a child of this process: the postmaster, its children
// (backends and auxiliary processes) and the exited children it reaped.
func postgresCPU() (time.Duration, bool) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, false
	}
	type stat struct {
		ppid                         int
		utime, stime, cutime, cstime int64
		comm                         string
	}
	stats := map[int]stat{}
	me := os.Getpid()
	master := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + p.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		l, r := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if l < 0 || r < l {
			continue
		}
		f := strings.Fields(s[r+1:]) // f[0] is the state (field 3)
		if len(f) < 15 {
			continue
		}
		var st stat
		st.comm = s[l+1 : r]
		st.ppid, _ = strconv.Atoi(f[1])
		st.utime, _ = strconv.ParseInt(f[11], 10, 64)
		st.stime, _ = strconv.ParseInt(f[12], 10, 64)
		st.cutime, _ = strconv.ParseInt(f[13], 10, 64)
		st.cstime, _ = strconv.ParseInt(f[14], 10, 64)
		stats[pid] = st
		if st.ppid == me && st.comm == "postgres" {
			master = pid
		}
	}
	if master == 0 {
		return 0, false
	}
	var ticks int64
	for pid, st := range stats {
		// Backends are the postmaster's children (each in a session of its own).
		if pid == master || st.ppid == master {
			ticks += st.utime + st.stime
		}
	}
	ticks += stats[master].cutime + stats[master].cstime // exited backends
	return time.Duration(ticks) * clockTick, true
}

// cpuModel names the processor, for the log.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// scratchText says where the pilots' work dirs are, for the log.
func scratchText() string {
	if base := os.Getenv("SCALEBOX_BENCH_SCRATCH"); base != "" {
		return base
	}
	return os.TempDir() + " (default)"
}

// loadAvg is the first field of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}
