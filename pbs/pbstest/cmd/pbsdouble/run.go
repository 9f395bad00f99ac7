package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// supervise is the double's "mom": it runs job id (or every subjob of an
// array parent) and records how it ended. qdel asks it to delete a
// running job with SIGUSR1 after setting DeleteReq in the job's record.
func supervise(st *state, id string) {
	j, err := st.load(id)
	if err != nil {
		fatal(1, "_run: %v", err)
	}
	if d, err := time.ParseDuration(os.Getenv("PBS_DOUBLE_START_DELAY")); err == nil && d > 0 {
		time.Sleep(d) // a queued job, as a real scheduler would keep it a while
	}
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	var mu sync.Mutex
	watchers := map[chan struct{}]bool{}
	go func() {
		for range usr1 {
			mu.Lock()
			for w := range watchers {
				select {
				case w <- struct{}{}:
				default:
				}
			}
			mu.Unlock()
		}
	}()
	watch := func() (chan struct{}, func()) {
		w := make(chan struct{}, 1)
		mu.Lock()
		watchers[w] = true
		mu.Unlock()
		return w, func() { mu.Lock(); delete(watchers, w); mu.Unlock() }
	}

	if !j.Array {
		w, done := watch()
		runOne(st, id, w)
		done()
		return
	}
	begun := time.Now().Unix()
	if st.update(id, func(p *Job) {
		if p.State == "Q" {
			p.State, p.Substate, p.Stime, p.Supervisor = "B", 41, begun, os.Getpid()
			p.Comment = "Job Array Began at " + comment(begun)
		}
	}).State != "B" {
		return // deleted while queued
	}
	var wg sync.WaitGroup
	for _, i := range j.Indices {
		wg.Add(1)
		go func(sid string) {
			defer wg.Done()
			w, done := watch()
			defer done()
			runOne(st, sid, w)
		}(subID(j, i))
	}
	wg.Wait()
	unlock := st.lock()
	defer unlock()
	p, err := st.load(id)
	if err != nil {
		return
	}
	failed := false
	for _, s := range st.subjobs(p) {
		if s.Exit != nil && *s.Exit != 0 {
			failed = true
		}
		s.State = "F"
		st.save(s)
	}
	zero := 0
	// OpenPBS leaves the parent's Exit_status at 0 even when a subjob
	// failed; only substate 93 and the comment say so.
	p.State, p.Substate, p.Exit, p.Obittime = "F", 92, &zero, time.Now().Unix()
	p.Comment = "Job Array Began at " + comment(begun) + " and finished"
	if failed {
		p.Substate, p.Comment = 93, "Job Array Began at "+comment(begun)+" and failed"
	}
	st.save(p)
}

func comment(t int64) string { return time.Unix(t, 0).Format("Mon Jan 02 at 15:04") }

// runOne runs one job or subjob to its end.
func runOne(st *state, id string, wake chan struct{}) {
	server := serverName()
	start := time.Now()
	var j *Job
	{
		unlock := st.lock()
		var err error
		j, err = st.load(id)
		if err != nil || j.State != "Q" {
			unlock()
			return // deleted while queued
		}
		j.State, j.Substate, j.Stime, j.Supervisor, j.RunCount = "R", 42, start.Unix(), os.Getpid(), 1
		j.ExecHost = server + "/0"
		if j.NCPUs > 1 {
			j.ExecHost = fmt.Sprintf("%s/0*%d", server, j.NCPUs)
		}
		j.Comment = fmt.Sprintf("Job run at %s on (%s:ncpus=%d)", comment(start.Unix()), server, j.NCPUs)
		st.save(j)
		unlock()
	}
	nodefile := filepath.Join(st.dir, "nodefiles", id)
	os.WriteFile(nodefile, []byte(strings.Repeat(server+"\n", max(j.Nodect, 1))), 0o644)
	defer os.Remove(nodefile)
	tmpdir := filepath.Join(st.dir, "tmp", "pbs."+id)
	os.MkdirAll(tmpdir, 0o700)
	defer os.RemoveAll(tmpdir)

	outf, errf := openOut(j.Output), (*os.File)(nil)
	if j.Join == "oe" {
		errf = outf
	} else {
		errf = openOut(j.Error)
	}
	defer outf.Close()
	defer errf.Close()

	env := []string{
		"HOME=" + j.Home, "LOGNAME=" + strings.Split(j.Owner, "@")[0], "USER=" + strings.Split(j.Owner, "@")[0],
		"SHELL=/bin/bash", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"PBS_JOBID=" + id, "PBS_JOBNAME=" + j.Name, "PBS_ENVIRONMENT=PBS_BATCH", "PBS_QUEUE=" + j.Queue,
		"PBS_NODEFILE=" + nodefile, "PBS_JOBDIR=" + j.Home, "TMPDIR=" + tmpdir,
		"PBS_TASKNUM=1", "PBS_NODENUM=0", "PBS_MOMPORT=15003",
		"NCPUS=" + strconv.Itoa(max(j.NCPUs/max(j.Nodect, 1), 1)),
		"OMP_NUM_THREADS=" + strconv.Itoa(max(j.NCPUs/max(j.Nodect, 1), 1)),
		"PBS_DOUBLE_DIR=" + st.dir, // plays the part of /etc/pbs.conf
	}
	if s := os.Getenv("PBS_DOUBLE_SERVER"); s != "" {
		env = append(env, "PBS_DOUBLE_SERVER="+s)
	}
	if s := os.Getenv("PBS_DOUBLE_KILL_DELAY"); s != "" {
		env = append(env, "PBS_DOUBLE_KILL_DELAY="+s)
	}
	for _, kv := range j.Vars {
		if strings.HasPrefix(kv[0], "PBS_O_") {
			env = append(env, kv[0]+"="+kv[1])
		}
	}
	if j.ArrayIndex != nil {
		env = append(env, "PBS_ARRAY_INDEX="+strconv.Itoa(*j.ArrayIndex), "PBS_ARRAY_ID="+j.ArrayID)
	}
	env = append(env, j.Env...)

	cmd := exec.Command("/bin/bash", j.Script)
	cmd.Dir = j.Home
	if _, err := os.Stat(cmd.Dir); err != nil {
		cmd.Dir = "/"
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = outf, errf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(errf, "=>> PBS: job could not start: %v\n", err)
		finish(st, id, start, -1, "Job run at "+comment(start.Unix())+" and failed")
		return
	}
	pgid := cmd.Process.Pid
	st.update(id, func(j *Job) { j.SessionID = pgid })
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var wallC <-chan time.Time
	if j.Walltime > 0 {
		t := time.NewTimer(time.Duration(j.Walltime*float64(time.Second)) - time.Since(start))
		defer t.Stop()
		wallC = t.C
	}
	var killC <-chan time.Time
	why := "" // "walltime", "deleted"
	deleter := ""
	terminate := func(reason string) {
		if why != "" {
			return
		}
		why = reason
		syscall.Kill(-pgid, syscall.SIGTERM)
		killC = time.After(killDelay())
	}
	select { // check for a qdel that came before the start
	case wake <- struct{}{}:
	default:
	}
	var werr error
loop:
	for {
		select {
		case werr = <-exited:
			break loop
		case <-wallC:
			fmt.Fprintf(errf, "=>> PBS: job killed: walltime %d exceeded limit %d\n",
				int(time.Since(start).Seconds()), int(j.Walltime))
			terminate("walltime")
		case <-wake:
			if cur, err := st.load(id); err == nil && cur.DeleteReq {
				deleter = cur.Deleter
				terminate("deleted")
			}
		case <-killC:
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL) // what is left of the job's processes
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			code = 128 + int(ws.Signal())
			if why == "deleted" {
				code = 256 + int(ws.Signal())
			}
		default:
			code = ws.ExitStatus()
		}
	}
	how := "finished"
	switch {
	case why == "walltime":
		code, how = -29, "exceeded resource walltime"
	case why == "deleted":
		if code < 256 {
			code = 256 + int(syscall.SIGTERM)
		}
		how = "terminated by " + deleter
	case code != 0:
		how = "failed"
	}
	finish(st, id, start, code, fmt.Sprintf("Job run at %s on (%s:ncpus=%d) and %s", comment(start.Unix()), server, j.NCPUs, how))
}

func finish(st *state, id string, start time.Time, code int, cmt string) {
	st.update(id, func(j *Job) {
		j.State, j.Substate = "F", 92
		switch {
		case code == -29 || (code > 0 && code < 256):
			j.Substate = 93
		case code >= 256:
			j.Substate = 91
		case code < 0:
			j.Substate = 93
		}
		if j.ArrayIndex != nil {
			j.State = "X"
		}
		j.Exit = &code
		j.Comment = cmt
		j.Obittime = time.Now().Unix()
		j.Used = int64(time.Since(start).Seconds())
	})
}

func openOut(p string) *os.File {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		f, _ = os.Open(os.DevNull)
	}
	return f
}
