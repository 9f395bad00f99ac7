package pbs_test

// End-to-end tests of package pbs through the OpenPBS test double
// (pbs/pbstest): real qsub/qstat/qdel executables running jobs as local
// processes. No real PBS server is involved.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/pbs"
	"github.com/scalebox-hpc/scalebox/pbs/pbstest"
)

func setup(t *testing.T, env ...string) (*pbs.Scheduler, *pbstest.Server, string) {
	t.Helper()
	t.Parallel()
	srv := pbstest.New(t, append([]string{"PBS_DOUBLE_KILL_DELAY=1"}, env...)...)
	dir := t.TempDir()
	return pbs.New(srv.Exec(), pbs.WithScriptDir(dir)), srv, dir
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// waitFor polls Status (one qstat call per round) until cond holds.
func waitFor(t *testing.T, s *pbs.Scheduler, ids []batch.JobID, what string, cond func(map[batch.JobID]batch.JobStatus) bool) map[batch.JobID]batch.JobStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last map[batch.JobID]batch.JobStatus
	for time.Now().Before(deadline) {
		st, err := s.Status(ctx(t), ids)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		last = st
		if cond(st) {
			return st
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not synchronisation
	}
	t.Fatalf("timed out waiting for %s; last %+v", what, last)
	return nil
}

func state(want batch.State, ids ...batch.JobID) func(map[batch.JobID]batch.JobStatus) bool {
	return func(m map[batch.JobID]batch.JobStatus) bool {
		for _, id := range ids {
			if m[id].State != want {
				return false
			}
		}
		return true
	}
}

func final(ids ...batch.JobID) func(map[batch.JobID]batch.JobStatus) bool {
	return func(m map[batch.JobID]batch.JobStatus) bool {
		for _, id := range ids {
			if !m[id].State.Final() {
				return false
			}
		}
		return true
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func TestDoubleCompleted(t *testing.T) {
	s, _, dir := setup(t)
	out := filepath.Join(dir, "job.out")
	id, err := s.Submit(ctx(t), &batch.JobSpec{
		Name: "hello", Walltime: time.Minute, CoresPerTask: 2, Output: out, WorkDir: dir,
		Env:     map[string]string{"GREETING": "hi there"},
		Command: sh(`while [ ! -e go ]; do sleep 0.05; done; echo "$GREETING $PBS_JOBID $PBS_JOBNAME $PBS_ENVIRONMENT $NCPUS"; echo to-stderr >&2`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9]+\.pbshost$`).MatchString(string(id)) {
		t.Fatalf("id %q", id)
	}
	st := waitFor(t, s, []batch.JobID{id}, "running", state(batch.Running, id))
	if st[id].Native != "R" || st[id].Node != "pbshost" {
		t.Errorf("running: %+v", st[id])
	}
	os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
	st = waitFor(t, s, []batch.JobID{id}, "final", final(id))
	if st[id].State != batch.Completed || st[id].ExitCode == nil || *st[id].ExitCode != 0 || st[id].Native != "F" {
		t.Errorf("final: %+v", st[id])
	}
	got := read(t, out) // -j oe: stderr joined
	if want := fmt.Sprintf("hi there %s hello PBS_BATCH 2\nto-stderr\n", id); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestDoubleFailed(t *testing.T) {
	s, _, dir := setup(t)
	var ids []batch.JobID
	for i, script := range []string{"exit 3", "kill -9 $$"} {
		id, err := s.Submit(ctx(t), &batch.JobSpec{Name: fmt.Sprint("f", i), Output: filepath.Join(dir, fmt.Sprint(i)), Command: []string{"/bin/bash", "-c", script}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	st := waitFor(t, s, ids, "final", final(ids...))
	for i, want := range []int{3, 137} {
		if s := st[ids[i]]; s.State != batch.Failed || s.ExitCode == nil || *s.ExitCode != want || !strings.HasSuffix(s.Reason, "and failed") {
			t.Errorf("%s: %+v, want Failed %d", ids[i], s, want)
		}
	}
}

func TestDoubleCancel(t *testing.T) {
	s, _, dir := setup(t)
	run, err := s.Submit(ctx(t), &batch.JobSpec{Name: "delrun", Output: filepath.Join(dir, "run"), Command: sh("echo started; exec sleep 60")})
	if err != nil {
		t.Fatal(err)
	}
	held, err := s.Submit(ctx(t), &batch.JobSpec{Name: "held", Output: filepath.Join(dir, "held"), Extra: []string{"-h"}, Command: sh("true")})
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, s, []batch.JobID{run, held}, "running", state(batch.Running, run))
	if st[held].State != batch.Pending || st[held].Native != "H" {
		t.Errorf("held: %+v", st[held])
	}
	for _, id := range []batch.JobID{run, held} {
		if err := s.Cancel(ctx(t), id); err != nil {
			t.Fatal(err)
		}
	}
	st = waitFor(t, s, []batch.JobID{run, held}, "final", final(run, held))
	if r := st[run]; r.State != batch.Cancelled || r.ExitCode == nil || *r.ExitCode != 271 || !strings.Contains(r.Reason, "terminated by") {
		t.Errorf("running job: %+v", r)
	}
	if h := st[held]; h.State != batch.Cancelled || h.ExitCode != nil {
		t.Errorf("held job: %+v", h)
	}
	// cancelling a finished or an unknown job is not an error
	if err := s.Cancel(ctx(t), run); err != nil {
		t.Error(err)
	}
	if err := s.Cancel(ctx(t), "99999.pbshost"); err != nil {
		t.Error(err)
	}
}

func TestDoubleWalltime(t *testing.T) {
	s, _, dir := setup(t)
	out, errf := filepath.Join(dir, "wall.out"), filepath.Join(dir, "wall.err")
	start := time.Now()
	id, err := s.Submit(ctx(t), &batch.JobSpec{
		Name: "wall", Walltime: 2 * time.Second, Output: out, Error: errf,
		// ignores SIGTERM: PBS must SIGKILL it after kill_delay (1 s here)
		Command: []string{"/bin/bash", "-c", `trap 'echo got SIGTERM' TERM; echo start; while :; do sleep 0.1; done`},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, s, []batch.JobID{id}, "final", final(id))
	if r := st[id]; r.State != batch.Timeout || r.ExitCode == nil || *r.ExitCode != -29 || !strings.HasSuffix(r.Reason, "exceeded resource walltime") {
		t.Errorf("%+v", r)
	}
	if el := time.Since(start); el < 2*time.Second || el > 10*time.Second {
		t.Errorf("ended after %v", el)
	}
	if o := read(t, out); !strings.Contains(o, "start\n") || !strings.Contains(o, "got SIGTERM") {
		t.Errorf("output %q", o)
	}
	if e := read(t, errf); !strings.HasPrefix(e, "=>> PBS: job killed: walltime ") || !strings.Contains(e, "exceeded limit 2") {
		t.Errorf("stderr %q", e)
	}
}

func TestDoubleArray(t *testing.T) {
	s, _, dir := setup(t)
	parent, err := s.Submit(ctx(t), &batch.JobSpec{
		Name: "arr", ArraySize: 3, Output: filepath.Join(dir, "arr.^array_index^.out"),
		Command: sh(`echo "idx=$PBS_ARRAY_INDEX id=$PBS_JOBID"; [ "$PBS_ARRAY_INDEX" != 1 ] || exit 5`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(parent), "[].pbshost") {
		t.Fatalf("array id %q", parent)
	}
	seq := strings.TrimSuffix(string(parent), "[].pbshost")
	sub := func(i int) batch.JobID { return batch.JobID(fmt.Sprintf("%s[%d].pbshost", seq, i)) }
	st := waitFor(t, s, []batch.JobID{parent}, "array final", final(parent, sub(0), sub(1), sub(2)))
	if len(st) != 4 {
		t.Errorf("want the parent and 3 subjobs, got %v", st)
	}
	// OpenPBS: the parent keeps Exit_status 0 though subjob 1 failed; its
	// substate (93) says failed.
	if p := st[parent]; p.State != batch.Failed || p.ExitCode == nil || *p.ExitCode != 0 {
		t.Errorf("parent %+v", p)
	}
	for i, want := range []batch.State{batch.Completed, batch.Failed, batch.Completed} {
		if st[sub(i)].State != want {
			t.Errorf("subjob %d: %+v, want %s", i, st[sub(i)], want)
		}
		if o := read(t, filepath.Join(dir, fmt.Sprintf("arr.%d.out", i))); o != fmt.Sprintf("idx=%d id=%s\n", i, sub(i)) {
			t.Errorf("subjob %d output %q", i, o)
		}
	}
	// subjobs can be asked for by id, with or without the server
	st, err = s.Status(ctx(t), []batch.JobID{sub(1), batch.JobID(seq + "[2]")})
	if err != nil || st[sub(1)].ExitCode == nil || *st[sub(1)].ExitCode != 5 || st[batch.JobID(seq+"[2]")].State != batch.Completed {
		t.Errorf("%v %v", st, err)
	}
}

// TestHelperInsideJob is run by TestDoubleDetectAllocation inside a PBS
// job (of the double); it prints the detected allocation.
func TestHelperInsideJob(t *testing.T) {
	if os.Getenv("SCALEBOX_PBS_INSIDE_JOB") != "1" {
		t.Skip("only inside a job of the PBS double")
	}
	s := pbs.New(batch.Exec{Path: os.Getenv("SCALEBOX_PBS_BIN")})
	a, err := s.DetectAllocation(context.Background(), os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(a)
	fmt.Printf("ALLOC %s\n", b)
}

func TestDoubleDetectAllocation(t *testing.T) {
	s, srv, dir := setup(t)
	out := filepath.Join(dir, "alloc.out")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	submitted := time.Now()
	id, err := s.Submit(ctx(t), &batch.JobSpec{
		Name: "alloc", Walltime: 10 * time.Minute, Nodes: 1, CoresPerTask: 3, Output: out, WorkDir: dir,
		Env:     map[string]string{"SCALEBOX_PBS_INSIDE_JOB": "1", "SCALEBOX_PBS_BIN": srv.Bin},
		Command: []string{self, "-test.run=^TestHelperInsideJob$", "-test.v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, s, []batch.JobID{id}, "final", final(id))
	o := read(t, out)
	if st[id].State != batch.Completed {
		t.Fatalf("%+v\n%s", st[id], o)
	}
	m := regexp.MustCompile(`ALLOC (\{.*\})`).FindStringSubmatch(o)
	if m == nil {
		t.Fatalf("no allocation in %q", o)
	}
	var a batch.Allocation
	if err := json.Unmarshal([]byte(m[1]), &a); err != nil {
		t.Fatal(err)
	}
	end := submitted.Add(10 * time.Minute)
	if a.Scheduler != "pbs" || a.JobID != id || a.ArrayIdx != -1 || len(a.Nodes) != 1 || a.Nodes[0] != "pbshost" || a.CPUs != 3 ||
		a.End.Before(end.Add(-2*time.Second)) || a.End.After(end.Add(5*time.Second)) {
		t.Errorf("allocation %+v (end want ≈ %v)", a, end)
	}
}

// TestDoubleQuirks: one qstat call with a known and an unknown id (rc 153),
// an invalid JSON escape in Variable_List, refused submissions.
func TestDoubleQuirks(t *testing.T) {
	s, srv, dir := setup(t, "PBS_DOUBLE_REFUSE_ROOT=1")
	x := srv.Exec()
	script := filepath.Join(dir, "s.sh")
	os.WriteFile(script, []byte("#!/bin/sh\ntrue\n"), 0o644)
	if os.Geteuid() == 0 {
		_, err := s.Submit(ctx(t), &batch.JobSpec{Command: []string{"true"}})
		var ce *batch.CommandError
		if !errors.As(err, &ce) || ce.ExitCode != 175 || !strings.Contains(ce.Stderr, "qsub: Bad UID for job execution") {
			t.Fatalf("root: %v", err)
		}
		x.Env = append(x.Env, "PBS_DOUBLE_REFUSE_ROOT=0")
		s = pbs.New(x, pbs.WithScriptDir(dir))
	}
	_, err := s.Submit(ctx(t), &batch.JobSpec{Queue: "noqueue", Command: []string{"true"}})
	var ce *batch.CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 170 || !strings.Contains(ce.Error(), "qsub: Unknown queue") {
		t.Errorf("bad queue: %v", err)
	}
	out, _, err := x.Run(ctx(t), "qsub", []string{"-N", "esc", "-o", filepath.Join(dir, "esc.out"), "-j", "oe", "-v", `WINPATH=C:\Users\me\new,PLAIN=1`, script}, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pbs.ParseSubmit(out)
	if err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, s, []batch.JobID{id}, "final", final(id))
	if st[id].State != batch.Completed {
		t.Errorf("%+v", st[id])
	}
	raw, _, _ := x.Run(ctx(t), "qstat", []string{"-x", "-f", "-F", "json", string(id)}, nil)
	if !strings.Contains(string(raw), `"WINPATH":"C:\Users\me\new"`) || !strings.Contains(string(raw), `"PLAIN":1`) {
		t.Errorf("the double should print Variable_List as qstat does:\n%s", raw)
	}
	if json.Valid(raw) {
		t.Error("qstat output with a backslash in Variable_List should not be valid JSON")
	}
	st, err = s.Status(ctx(t), []batch.JobID{id, "424242.pbshost"})
	if err != nil || st[id].State != batch.Completed || st["424242.pbshost"].State != batch.Unknown {
		t.Errorf("%+v %v", st, err)
	}
	// without ids: every job the server knows (with history)
	all, err := s.Status(ctx(t), nil)
	if err != nil || all[id].State != batch.Completed {
		t.Errorf("all jobs: %+v %v", all, err)
	}
	// finished job without -x: rc 35
	_, errb, err := x.Run(ctx(t), "qstat", []string{"-f", string(id)}, nil)
	if !errors.As(err, &ce) || ce.ExitCode != 35 || !strings.Contains(string(errb), "Job has finished, use -x or -H") {
		t.Errorf("no -x: %v %s", err, errb)
	}
	noHist, err := pbs.New(x, pbs.WithHistory(false)).Status(ctx(t), []batch.JobID{id})
	if err != nil || noHist[id].State != batch.Unknown {
		t.Errorf("without history: %+v %v", noHist, err)
	}
	// the empty-prologue format for an unknown id
	o, errb, err := x.Run(ctx(t), "qstat", []string{"-x", "-f", "-F", "json", "99999.pbshost"}, nil)
	if !errors.As(err, &ce) || ce.ExitCode != 153 || string(errb) != "qstat: Unknown Job Id 99999.pbshost\n" ||
		!strings.HasSuffix(string(o), "\"pbs_server\":\"pbshost\"\n}") {
		t.Errorf("unknown: %v %q %q", err, errb, o)
	}
}

// TestDoubleFormat compares the attribute names and order the double
// prints for a finished job with a recorded OpenPBS one.
func TestDoubleFormat(t *testing.T) {
	s, srv, dir := setup(t)
	id, err := s.Submit(ctx(t), &batch.JobSpec{Name: "hello2", Walltime: time.Minute, Output: filepath.Join(dir, "o"), Error: filepath.Join(dir, "e"), Command: sh("true")})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, []batch.JobID{id}, "final", final(id))
	got, _, err := srv.Exec().Run(ctx(t), "qstat", []string{"-x", "-f", "-F", "json", string(id)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/samples/simple2-after-usecp.txt")
	if err != nil {
		t.Fatal(err)
	}
	keys := func(b []byte) string {
		var k []string
		for _, m := range regexp.MustCompile(`(?m)^( {4}| {12}| {16})"([A-Za-z_]+)":`).FindAllSubmatch(b, -1) {
			k = append(k, string(m[1])+string(m[2]))
		}
		return strings.Join(k, "\n")
	}
	if g, w := keys(got), keys(want); g != w {
		t.Errorf("attribute layout differs from OpenPBS's:\n--- double\n%s\n--- OpenPBS 23.06\n%s", g, w)
	}
}
