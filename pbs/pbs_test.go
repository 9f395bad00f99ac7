package pbs

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

func runBash(script string) (string, error) {
	cmd := exec.Command("bash", "-s")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fake is a Commander returning canned outputs and recording calls.
type fake struct {
	mu     sync.Mutex
	calls  [][]string
	script string // the qsub script file's content at call time
	reply  map[string]reply
}

type reply struct {
	out, errb string
	rc        int
	err       error
}

func (f *fake) Run(_ context.Context, name string, args []string, _ io.Reader) ([]byte, []byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, append([]string{name}, args...))
	if name == "qsub" && len(args) == 1 {
		b, _ := os.ReadFile(args[0])
		f.script = string(b)
	}
	r := f.reply[name]
	if r.err != nil {
		return []byte(r.out), []byte(r.errb), r.err
	}
	if r.rc != 0 {
		return []byte(r.out), []byte(r.errb), &batch.CommandError{Cmd: name, ExitCode: r.rc, Stderr: r.errb}
	}
	return []byte(r.out), []byte(r.errb), nil
}

func sample(t *testing.T, name string) string {
	b, err := os.ReadFile(filepath.Join("testdata/samples", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSubmitFake(t *testing.T) {
	f := &fake{reply: map[string]reply{"qsub": {out: "Welcome to HPC\n13[].pbshost\n"}}}
	s := New(f, WithScriptDir(t.TempDir()))
	id, err := s.Submit(context.Background(), &batch.JobSpec{Name: "p", ArraySize: 4, Command: []string{"true"}})
	if err != nil || id != "13[].pbshost" {
		t.Fatalf("%q %v", id, err)
	}
	if len(f.calls) != 1 || f.calls[0][0] != "qsub" || !strings.Contains(f.script, "#PBS -J 0-3") {
		t.Errorf("calls %v script %q", f.calls, f.script)
	}
	if _, err := os.Stat(f.calls[0][1]); !os.IsNotExist(err) {
		t.Errorf("script file left behind: %v", err)
	}

	f.reply["qsub"] = reply{errb: strings.TrimPrefix(sample(t, "root-qsub-refused.txt"), "$ echo \"hostname\" | qsub   # as root, acl_roots unset\n"), rc: 175}
	_, err = s.Submit(context.Background(), &batch.JobSpec{Command: []string{"true"}})
	var ce *batch.CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 175 || !strings.Contains(ce.Stderr, "Bad UID for job execution") {
		t.Errorf("refused: %v", err)
	}
	f.reply["qsub"] = reply{out: "nothing useful\n"}
	if _, err = s.Submit(context.Background(), &batch.JobSpec{Command: []string{"true"}}); !errors.As(err, &ce) {
		t.Errorf("no id: %v", err)
	}
	f.reply["qsub"] = reply{err: errors.New("exec: qsub: not found")}
	if _, err = s.Submit(context.Background(), &batch.JobSpec{Command: []string{"true"}}); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("exec failure: %v", err)
	}
}

func TestStatusFake(t *testing.T) {
	// qdel-after.txt's JSON for 9, 11, 12, plus an unknown id on stderr
	// with rc 153, as real qstat does.
	data := sample(t, "qdel-after.txt")
	docs := sampleDocs(t, []byte(data))
	f := &fake{reply: map[string]reply{"qstat": {out: string(docs[0]), errb: "qstat: Unknown Job Id 99999.pbshost\n", rc: 153}}}
	s := New(f)
	got, err := s.Status(context.Background(), []batch.JobID{"9.pbshost", "11", "12.pbshost", "99999.pbshost"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"qstat", "-x", "-t", "-f", "-F", "json", "9.pbshost", "11", "12.pbshost", "99999.pbshost"}
	if strings.Join(f.calls[0], " ") != strings.Join(want, " ") {
		t.Errorf("call %v", f.calls[0])
	}
	if len(f.calls) != 1 {
		t.Errorf("%d calls", len(f.calls))
	}
	for id, st := range map[batch.JobID]batch.State{"9.pbshost": batch.Cancelled, "11": batch.Cancelled, "12.pbshost": batch.Cancelled, "99999.pbshost": batch.Unknown} {
		if got[id].State != st || got[id].ID != id {
			t.Errorf("%s: %+v, want %s", id, got[id], st)
		}
	}
	if !strings.Contains(got["99999.pbshost"].Reason, "Unknown Job Id") {
		t.Errorf("reason %q", got["99999.pbshost"].Reason)
	}
	// another failure is an error carrying PBS's message
	f.reply["qstat"] = reply{errb: "qstat: cannot connect to server pbshost (errno=15010)\n", rc: 1}
	var ce *batch.CommandError
	if _, err := s.Status(context.Background(), []batch.JobID{"1"}); !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "cannot connect") {
		t.Errorf("err %v", err)
	}
	// without history, no -x
	f.calls = nil
	f.reply["qstat"] = reply{out: "{\n    \"timestamp\":1,\n    \"pbs_server\":\"pbshost\"\n}", errb: "qstat: 9.pbshost Job has finished, use -x or -H to obtain historical job information\n", rc: 35}
	got, err = New(f, WithHistory(false)).Status(context.Background(), []batch.JobID{"9.pbshost"})
	if err != nil || got["9.pbshost"].State != batch.Unknown || f.calls[0][1] != "-t" {
		t.Errorf("%v %v %v", got, err, f.calls)
	}
}

func TestCancelFake(t *testing.T) {
	f := &fake{reply: map[string]reply{}}
	s := New(f)
	if err := s.Cancel(context.Background(), "9.pbshost"); err != nil {
		t.Fatal(err)
	}
	f.reply["qdel"] = reply{errb: "qdel: Unknown Job Id 99999.pbshost\n", rc: 153}
	if err := s.Cancel(context.Background(), "99999.pbshost"); err != nil {
		t.Errorf("unknown: %v", err)
	}
	f.reply["qdel"] = reply{errb: "qdel: Unauthorized Request  9.pbshost\n", rc: 159}
	if err := s.Cancel(context.Background(), "9.pbshost"); err == nil {
		t.Error("want error")
	}
	if got := strings.Join(f.calls[0], " "); got != "qdel 9.pbshost" {
		t.Errorf("call %q", got)
	}
}

func TestDetectAllocationFake(t *testing.T) {
	nf := filepath.Join(t.TempDir(), "nodes")
	os.WriteFile(nf, []byte("n1\nn1\nn2\nn2\n"), 0o644)
	data := sample(t, "simple-qstat-f-json-running.txt")
	doc := sampleDocs(t, []byte(data))[0]
	// the running job has no stime: End = now + walltime - used
	now := time.Date(2026, 11, 22, 3, 4, 0, 0, time.UTC)
	f := &fake{reply: map[string]reply{"qstat": {out: string(doc)}}}
	s := New(f, WithClock(func() time.Time { return now }, time.UTC))
	env := map[string]string{"PBS_JOBID": "2.pbshost", "PBS_NODEFILE": nf, "NCPUS": "4", "PBS_ARRAY_INDEX": ""}
	a, err := s.DetectAllocation(context.Background(), func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if a.JobID != "2.pbshost" || a.ArrayIdx != -1 || strings.Join(a.Nodes, ",") != "n1,n2" || a.CPUs != 4 || !a.End.Equal(now.Add(time.Minute)) {
		t.Errorf("%+v", a)
	}
	if got := strings.Join(f.calls[0], " "); got != "qstat -f -F json 2.pbshost" {
		t.Errorf("call %q", got)
	}
	// with stime: End = stime + walltime (walltime.txt: 03:05:48 + 10 s)
	wt := sampleDocs(t, []byte(sample(t, "walltime.txt")))[0]
	f.reply["qstat"] = reply{out: string(wt)}
	env = map[string]string{"PBS_JOBID": "14.pbshost", "PBS_ARRAY_INDEX": "3", "OMP_NUM_THREADS": "2"}
	a, err = s.DetectAllocation(context.Background(), func(k string) string { return env[k] })
	if err != nil || a.ArrayIdx != 3 || a.CPUs != 2 || !a.End.Equal(time.Date(2026, 11, 22, 3, 5, 58, 0, time.UTC)) {
		t.Errorf("%+v %v", a, err)
	}
	// qstat failing leaves End zero
	f.reply["qstat"] = reply{rc: 153, errb: "qstat: Unknown Job Id 14.pbshost"}
	a, err = s.DetectAllocation(context.Background(), func(k string) string { return env[k] })
	if err != nil || !a.End.IsZero() {
		t.Errorf("%+v %v", a, err)
	}
	if _, err := s.DetectAllocation(context.Background(), func(string) string { return "" }); !errors.Is(err, ErrNoAllocation) {
		t.Errorf("outside a job: %v", err)
	}
}
