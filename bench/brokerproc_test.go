package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/internal/pgtest"
	"github.com/scalebox-hpc/scalebox/internal/testenv"
)

// brokerProc is a scalebox-broker process (the binary testenv builds) on a
// fresh store, listening on a free port of 127.0.0.1, with auth on: the
// admin token it created in its token file is the benchmark's.
type brokerProc struct {
	kind  string
	url   string
	pid   int
	dir   string
	token string      // admin token
	admin *api.Client // with the admin token

	cmd  *exec.Cmd
	out  *testenv.Buffer // the broker's log (JSON lines)
	done chan struct{}
	err  error // of cmd.Wait, once done is closed
}

// startBroker starts a broker process on a fresh store of the given kind
// (a SQLite file in tb's temporary directory, or a new database on pgtest's
// PostgreSQL server) and waits until it serves. It is stopped (SIGTERM)
// when tb ends, before the PostgreSQL database is dropped.
func startBroker(tb testing.TB, kind string) *brokerProc {
	tb.Helper()
	bin := testenv.ScaleboxBroker(tb)
	dir := tb.TempDir()
	var db string
	switch kind {
	case "sqlite":
		db = filepath.Join(dir, "scalebox.db")
	case "postgres":
		db = pgtest.DSN(tb)
	default:
		tb.Fatalf("unknown store %q", kind)
	}
	tokenFile := filepath.Join(dir, "token")
	cmd := exec.Command(bin, "--db", db, "--listen", "127.0.0.1:0", "--token-file", tokenFile,
		"--no-provision", "--job-log-dir", filepath.Join(dir, "jobs"), "--log-format", "json", "--log-level", "info")
	cmd.Env = append(os.Environ(), "SCALEBOX_DB=", "SCALEBOX_LISTEN=", "SCALEBOX_TOKEN_FILE=")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	p := &brokerProc{kind: kind, pid: cmd.Process.Pid, dir: dir, cmd: cmd, out: &testenv.Buffer{}, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = pw.Close()
		close(p.done)
	}()
	tb.Cleanup(func() { p.stop(tb) })

	// The broker logs its address once it listens (after the token file is
	// written and the store is open): read it from its log.
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.out.Write(line)
			_, _ = p.out.Write([]byte{'\n'})
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &l) == nil && l.Msg == "scalebox-broker serving" {
				select {
				case addr <- l.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case p.url = <-addr:
	case <-p.done:
		tb.Fatalf("broker exited before serving: %v\n%s", p.err, p.out)
	case <-time.After(time.Minute):
		tb.Fatalf("broker not serving after a minute:\n%s", p.out)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		tb.Fatalf("admin token: %v", err)
	}
	p.token = strings.TrimSpace(string(b))
	p.admin = api.NewClient(p.url, p.token)
	return p
}

// stop ends the broker (SIGTERM, then SIGKILL after 30 s) and waits for it.
func (p *brokerProc) stop(tb testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		tb.Logf("broker did not stop within 30 s of SIGTERM: killing it")
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// alive fails tb if the broker has exited.
func (p *brokerProc) alive(tb testing.TB) {
	tb.Helper()
	select {
	case <-p.done:
		tb.Fatalf("broker exited: %v\n%s", p.err, p.out)
	default:
	}
}

// cpu is the CPU time (user + system, all threads) the broker used so far.
func (p *brokerProc) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	d, err := procCPU(p.pid)
	if err != nil {
		tb.Fatalf("broker CPU: %v", err)
	}
	return d
}

// mem is the broker's resident memory now.
func (p *brokerProc) mem(tb testing.TB) procMem {
	tb.Helper()
	m, err := readProcMem(p.pid)
	if err != nil {
		tb.Fatalf("broker memory: %v", err)
	}
	return m
}

// pilotToken creates a token of role pilot for site "local" (the site a
// pilot registers on by default), as an operator would for pilots.
func (p *brokerProc) pilotToken(tb testing.TB) string {
	tb.Helper()
	r, err := p.admin.TokenCreate(context.Background(), &api.TokenRequest{Name: "bench pilots", Role: "pilot", Site: "local"})
	if err != nil {
		tb.Fatalf("create pilot token: %v", err)
	}
	return r.Token
}

// createApp creates the noop app and returns it with the id of its module.
func (p *brokerProc) createApp(tb testing.TB) (app *api.App, moduleID int64) {
	tb.Helper()
	ctx := context.Background()
	a, err := p.admin.AppCreate(ctx, &api.AppCreateRequest{YAML: noopApp, Filename: "app.yaml"})
	if err != nil {
		tb.Fatalf("create app: %v", err)
	}
	if len(a.Modules) == 0 {
		if a, err = p.admin.AppGet(ctx, a.ID); err != nil {
			tb.Fatalf("get app: %v", err)
		}
	}
	for _, m := range a.Modules {
		if m.Name == "noop" {
			return a, m.ID
		}
	}
	tb.Fatalf("app %d has no module noop: %+v", a.ID, a.Modules)
	return nil, 0
}

// addTasks adds n READY tasks of module noop in batches of 5000 (bodies
// prefix-0000000 …), the way a user's `scalebox task add` does.
func (p *brokerProc) addTasks(tb testing.TB, appID int64, prefix string, n int) {
	tb.Helper()
	const batch = 5000
	ctx := context.Background()
	in := make([]api.TaskInput, 0, batch)
	for k := 0; k < n; k += batch {
		in = in[:0]
		for j := k; j < min(k+batch, n); j++ {
			in = append(in, api.TaskInput{Body: fmt.Sprintf("%s-%07d", prefix, j)})
		}
		r, err := p.admin.TaskAdd(ctx, appID, &api.TaskAddRequest{Module: "noop", Tasks: in})
		if err != nil {
			tb.Fatalf("add tasks %d…: %v", k, err)
		}
		if r.Inserted != len(in) {
			tb.Fatalf("add tasks %d…: %d inserted of %d", k, r.Inserted, len(in))
		}
	}
}

// metric reads gauges or counters without labels from the broker's
// Prometheus endpoint (e.g. go_memstats_heap_inuse_bytes); a name it does
// not find is left out.
func (p *brokerProc) metric(names ...string) map[string]float64 {
	out := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/metrics", nil)
	if err != nil {
		return out
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		for _, n := range names {
			if f[0] == n {
				out[n], _ = strconv.ParseFloat(f[1], 64)
			}
		}
	}
	return out
}

// procCPU is the user + system CPU time of a process (all its threads),
// from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	r := strings.LastIndexByte(s, ')')
	if r < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[r+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// procMem is a process's resident memory, from /proc/<pid>/status.
type procMem struct {
	rss, anon, file int64 // bytes: VmRSS, RssAnon, RssFile
}

func (m procMem) String() string {
	return fmt.Sprintf("RSS %.1f MB (anon %.1f, file %.1f)", mb(m.rss), mb(m.anon), mb(m.file))
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

func readProcMem(pid int) (procMem, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procMem{}, err
	}
	var m procMem
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &m.rss
		case "RssAnon":
			dst = &m.anon
		case "RssFile":
			dst = &m.file
		default:
			continue
		}
		f := strings.Fields(v) // "1234 kB"
		if len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			*dst = n << 10
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}

// raiseNoFile raises this process's soft limit of open files to at least
// n (up to the hard limit) and says what it is.
func raiseNoFile(n uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= n {
		return l.Cur, nil
	}
	l.Cur = min(n, l.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	return l.Cur, nil
}

// simPilot is a simulated pilot: it registers, leases, heartbeats and
// reports results as pilot.Run does, but runs nothing (every task it
// leases succeeds at once).
type simPilot struct {
	calls *api.Client
	id    int64
	host  string
	hosts []string      // the names it leases for, as pilot.Run sends them
	hb    time.Duration // heartbeat period the broker asked for

	mu   sync.Mutex
	held map[int64]int // task → attempt, leased and not yet reported
}

// registerSim registers a simulated pilot with slots slots of module noop.
func registerSim(ctx context.Context, calls *api.Client, host string, slots int) (*simPilot, error) {
	r, err := calls.PilotRegister(ctx, &api.PilotRegistration{Site: "local", Host: host, IP: "127.0.0.1", Cores: slots,
		Slots: map[string]int{"noop": slots}, Version: "bench"})
	if err != nil {
		return nil, fmt.Errorf("register %s: %w", host, err)
	}
	hb := time.Duration(r.HeartbeatSeconds * float64(time.Second))
	if hb <= 0 {
		hb = 10 * time.Second
	}
	return &simPilot{calls: calls, id: r.Pilot.ID, host: host, hosts: []string{host, "127.0.0.1"}, hb: hb, held: map[int64]int{}}, nil
}

// lease asks for up to max tasks of the module, waiting up to wait for
// them as a pilot's long poll does.
func (p *simPilot) lease(ctx context.Context, moduleID int64, max int, wait time.Duration) ([]api.LeasedTask, error) {
	r, err := p.calls.Lease(ctx, p.id, &api.LeaseRequest{Slots: []api.SlotRequest{{ModuleID: moduleID, Max: max}},
		Hosts: p.hosts, WaitSeconds: wait.Seconds()})
	if err != nil {
		return nil, err
	}
	if len(r.Tasks) > 0 {
		p.mu.Lock()
		for _, t := range r.Tasks {
			p.held[t.TaskID] = t.Attempt
		}
		p.mu.Unlock()
	}
	return r.Tasks, nil
}

// complete reports every task as succeeded (code 0) in one request and
// checks that the broker applied each result.
func (p *simPilot) complete(ctx context.Context, tasks []api.LeasedTask) error {
	now := time.Now()
	req := &api.CompleteRequest{Results: make([]api.Result, len(tasks))}
	for i, t := range tasks {
		req.Results[i] = api.Result{TaskID: t.TaskID, Attempt: t.Attempt, Code: 0, Record: api.Attempt{
			Host: p.host, Slot: "noop-0", StartedAt: &now, ProgramStart: &now, ProgramEnd: &now, ReportedAt: &now}}
	}
	r, err := p.calls.Complete(ctx, p.id, req)
	if err != nil {
		return err
	}
	p.mu.Lock()
	for _, t := range tasks {
		delete(p.held, t.TaskID)
	}
	p.mu.Unlock()
	if len(r.Results) != len(tasks) {
		return fmt.Errorf("complete: %d results for %d tasks", len(r.Results), len(tasks))
	}
	for _, res := range r.Results {
		if !res.Applied || res.Status != api.StatusOK {
			return fmt.Errorf("complete: task %d not applied OK: %+v", res.TaskID, res)
		}
	}
	return nil
}

// heartbeater heartbeats every p.hb as pilot.Run does (reconcile, with the
// attempts the pilot holds) until ctx ends; each heartbeat's duration goes
// to took (if not nil). It returns the first failure, or nil once ctx ends.
func (p *simPilot) heartbeater(ctx context.Context, took *sampler) error {
	t := time.NewTicker(p.hb)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		req := &api.HeartbeatRequest{Reconcile: true}
		p.mu.Lock()
		for id, att := range p.held {
			req.Held = append(req.Held, api.TaskAttempt{TaskID: id, Attempt: att})
		}
		p.mu.Unlock()
		start := time.Now()
		r, err := p.calls.Heartbeat(ctx, p.id, req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("heartbeat of pilot %d: %w", p.id, err)
		}
		if took != nil {
			took.add(time.Since(start))
		}
		if r.Status != "ACTIVE" {
			return fmt.Errorf("heartbeat of pilot %d: status %s", p.id, r.Status)
		}
	}
}

// sampler collects durations from several goroutines.
type sampler struct {
	mu sync.Mutex
	d  dist
	n  int
}

func (s *sampler) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.n++
	s.mu.Unlock()
}

// count is the number of samples added so far (take does not reset it).
func (s *sampler) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func (s *sampler) take() dist {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.d
	s.d = nil
	return d
}

// firstError keeps the first error of several goroutines.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// otherCores is the CPU other processes of the machine used during wall,
// in cores: the machine's busy time less this process (the simulated
// pilots), the broker and PostgreSQL.
func otherCores(machine, self, broker, pg, wall time.Duration) float64 {
	return max(0, machine-self-broker-pg).Seconds() / wall.Seconds()
}

// sampleTable is table without the rows that have no samples.
func sampleTable(rows []string, samples map[string]dist) string {
	var keep []string
	for _, r := range rows {
		if len(samples[r]) > 0 {
			keep = append(keep, r)
		}
	}
	return table(keep, samples)
}
