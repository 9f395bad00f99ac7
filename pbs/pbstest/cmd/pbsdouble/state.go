package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Job is the double's record of one job, array parent or subjob.
type Job struct {
	ID         string
	Seq        int
	Name       string
	Owner      string
	Queue      string
	State      string
	Substate   int
	Ctime      int64
	Mtime      int64
	Stime      int64
	Obittime   int64
	Hold       bool
	Select     string
	Place      string
	Nodect     int
	NCPUs      int
	Mem        string
	NGPUs      int
	Walltime   float64 // seconds; 0 = none
	Output     string  // local path, may hold ^array_index^
	Error      string
	Join       string // "n" or "oe"
	Vars       [][2]string
	Env        []string // -V / -v, exported to the job
	SubmitArgs string
	Comment    string
	Exit       *int
	SessionID  int
	Supervisor int
	ExecHost   string
	RunCount   int
	Used       int64 // walltime used, seconds
	Array      bool
	Indices    []int
	ArrayID    string
	ArrayIndex *int
	DeleteReq  bool
	Deleter    string
	Script     string
	Workdir    string
	Home       string
}

type state struct{ dir string }

func openState() (*state, error) {
	dir := os.Getenv("PBS_DOUBLE_DIR")
	if dir == "" {
		return nil, fmt.Errorf("PBS_DOUBLE_DIR is not set (pbsdouble is the Scalebox PBS test double)")
	}
	for _, d := range []string{"jobs", "scripts", "nodefiles", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &state{dir: dir}, nil
}

// lock takes the double's global lock (the "server").
func (s *state) lock() func() {
	f, err := os.OpenFile(filepath.Join(s.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		fatal(1, "pbsdouble: lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		fatal(1, "pbsdouble: lock: %v", err)
	}
	return func() { f.Close() }
}

// nextSeq allocates a job sequence number; call with the lock held.
func (s *state) nextSeq() int {
	p := filepath.Join(s.dir, "seq")
	b, _ := os.ReadFile(p)
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	n++
	if err := os.WriteFile(p, []byte(strconv.Itoa(n)), 0o644); err != nil {
		fatal(1, "pbsdouble: seq: %v", err)
	}
	return n
}

func (s *state) path(id string) string { return filepath.Join(s.dir, "jobs", id+".json") }

func (s *state) load(id string) (*Job, error) {
	b, err := os.ReadFile(s.path(id))
	if err != nil {
		return nil, err
	}
	var j Job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// save writes j atomically (readers never take the lock).
func (s *state) save(j *Job) {
	j.Mtime = time.Now().Unix()
	b, err := json.Marshal(j)
	if err != nil {
		fatal(1, "pbsdouble: %v", err)
	}
	tmp := filepath.Join(s.dir, "tmp", fmt.Sprintf("%s.%d.tmp", j.ID, os.Getpid()))
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		fatal(1, "pbsdouble: %v", err)
	}
	if err := os.Rename(tmp, s.path(j.ID)); err != nil {
		fatal(1, "pbsdouble: %v", err)
	}
}

// update applies f to job id under the lock.
func (s *state) update(id string, f func(j *Job)) *Job {
	unlock := s.lock()
	defer unlock()
	j, err := s.load(id)
	if err != nil {
		return nil
	}
	f(j)
	s.save(j)
	return j
}

// all returns every job, parents before their subjobs, by sequence.
func (s *state) all() []*Job {
	ents, _ := os.ReadDir(filepath.Join(s.dir, "jobs"))
	var jobs []*Job
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if j, err := s.load(strings.TrimSuffix(e.Name(), ".json")); err == nil {
			jobs = append(jobs, j)
		}
	}
	sort.Slice(jobs, func(a, b int) bool {
		x, y := jobs[a], jobs[b]
		if x.Seq != y.Seq {
			return x.Seq < y.Seq
		}
		return idx(x) < idx(y)
	})
	return jobs
}

func idx(j *Job) int {
	if j.ArrayIndex == nil {
		return -1 << 30
	}
	return *j.ArrayIndex
}

// find resolves a user's id: exact, or by "seq[idx]" without the server.
func (s *state) find(id string) *Job {
	if j, err := s.load(id); err == nil && !strings.ContainsAny(id, "/") {
		return j
	}
	short := id
	if i := strings.IndexByte(short, '.'); i >= 0 {
		short = short[:i]
	}
	for _, j := range s.all() {
		jid := j.ID
		if i := strings.IndexByte(jid, '.'); i >= 0 {
			jid = jid[:i]
		}
		if jid == short {
			return j
		}
	}
	return nil
}

func (s *state) subjobs(parent *Job) []*Job {
	var subs []*Job
	for _, i := range parent.Indices {
		if j, err := s.load(subID(parent, i)); err == nil {
			subs = append(subs, j)
		}
	}
	return subs
}

func subID(parent *Job, i int) string {
	return strings.Replace(parent.ID, "[]", fmt.Sprintf("[%d]", i), 1)
}

func finished(j *Job) bool { return j.State == "F" || j.State == "X" }

func fatal(rc int, format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(rc)
}

func serverName() string {
	if s := os.Getenv("PBS_DOUBLE_SERVER"); s != "" {
		return s
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "pbshost"
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return h
}

func killDelay() time.Duration {
	if v, err := strconv.ParseFloat(os.Getenv("PBS_DOUBLE_KILL_DELAY"), 64); err == nil && v >= 0 {
		return time.Duration(v * float64(time.Second))
	}
	return 10 * time.Second
}

// pbsTime is how qstat prints times.
func pbsTime(sec int64) string { return time.Unix(sec, 0).Format("Mon Jan _2 15:04:05 2006") }

// hms formats seconds as HH:MM:SS.
func hms(sec int64) string {
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}
