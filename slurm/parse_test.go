package slurm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSbatch(t *testing.T) {
	for file, want := range map[string][2]string{
		"sbatch-22.05-parsable.stdout": {"4242", ""},
		"sbatch-federation.stdout":     {"4243", "cluster-a"},
		"sbatch-banner.stdout":         {"4244", ""},
	} {
		id, cluster, err := ParseSbatch(readTestdata(t, file))
		if err != nil || string(id) != want[0] || cluster != want[1] {
			t.Errorf("%s: %q %q %v, want %v", file, id, cluster, err, want)
		}
	}
	for in, want := range map[string]string{
		"Submitted batch job 77\n":                  "77",
		"Submitted batch job 78 on cluster other\n": "78",
		"12\r\n":      "12",
		"  13  \n\n":  "13",
		"1\n2\n":      "2",
		"2;c\nbye\n":  "2",
		"3;a;b\n4\n":  "4",
		"banner 5\n6": "6",
	} {
		id, _, err := ParseSbatch([]byte(in))
		if err != nil || string(id) != want {
			t.Errorf("ParseSbatch(%q) = %q, %v; want %s", in, id, err, want)
		}
	}
	for _, in := range []string{"", "\n", "sbatch: error: Batch job submission failed", "12a", "-1", "3;a;b"} {
		if id, _, err := ParseSbatch([]byte(in)); err == nil {
			t.Errorf("ParseSbatch(%q) = %q, want an error", in, id)
		}
	}
}

func TestMapState(t *testing.T) {
	for native, want := range map[string]batch.State{
		"PENDING": batch.Pending, "CONFIGURING": batch.Pending, "REQUEUED": batch.Pending,
		"REQUEUE_HOLD": batch.Pending, "REQUEUE_FED": batch.Pending, "RESV_DEL_HOLD": batch.Pending,
		"SPECIAL_EXIT": batch.Pending,
		"RUNNING":      batch.Running, "COMPLETING": batch.Running, "SUSPENDED": batch.Running,
		"STOPPED": batch.Running, "SIGNALING": batch.Running, "STAGE_OUT": batch.Running, "RESIZING": batch.Running,
		"COMPLETED": batch.Completed,
		"FAILED":    batch.Failed, "NODE_FAIL": batch.Failed, "BOOT_FAIL": batch.Failed, "OUT_OF_MEMORY": batch.Failed,
		"CANCELLED": batch.Cancelled, "CANCELLED by 1000": batch.Cancelled, "PREEMPTED": batch.Cancelled, "REVOKED": batch.Cancelled,
		"TIMEOUT": batch.Timeout, "DEADLINE": batch.Timeout,
		"PD": batch.Pending, "R": batch.Running, "CG": batch.Running, "CD": batch.Completed, "F": batch.Failed,
		"CA": batch.Cancelled, "TO": batch.Timeout, "OOM": batch.Failed, "running": batch.Running,
		"RUNNING+": batch.Running, "": batch.Unknown, "NEW_STATE_2030": batch.Unknown,
	} {
		if got := MapState(native); got != want {
			t.Errorf("MapState(%q) = %s, want %s", native, got, want)
		}
	}
}

func TestParseExitCode(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "768": 3, "1792": 7, "9": 137, "15": 143, "3:0": 3, "0:9": 137, "0:15": 143, "255:0": 255} {
		got := parseExitCode(in)
		if got == nil || *got != want {
			t.Errorf("parseExitCode(%q) = %v, want %d", in, got, want)
		}
	}
	for _, in := range []string{"", "N/A", "-1", "a:b", "1:", "99999999999999"} {
		if got := parseExitCode(in); got != nil {
			t.Errorf("parseExitCode(%q) = %d, want nil", in, *got)
		}
	}
}

// squeueMixed is squeue-22.05-mixed.txt, recorded on Slurm 22.05.8 with:
// 17 running (walltime 1 min), 18 cancelled while running, 19 running,
// 20 exit 7, 21 killed by SIGKILL, 22 held, 24 an array 0-9%3 (0-2
// running, 3-9 a pending range), 25 an array 1,3,5-9:2, held.
func TestStatusRecorded(t *testing.T) {
	f := newFake(map[string]reply{
		"squeue": {Stdout: string(readTestdata(t, "squeue-22.05-mixed.txt"))},
		"sacct": {ExitCode: 1, Stdout: string(readTestdata(t, "sacct-22.05-disabled.stdout")),
			Stderr: string(readTestdata(t, "sacct-22.05-disabled.stderr"))},
	})
	s := New(f, WithUser("root"))
	ids := []batch.JobID{"17", "18", "19", "20", "21", "22", "24", "24_5", "26", "25_3", "25_4", "999", "2", "3_11", "3", "bogus"}
	got, err := s.Status(t.Context(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if n, m := f.count("squeue"), f.count("sacct"); n != 1 || m != 1 {
		t.Errorf("%d squeue and %d sacct calls, want 1 and 1", n, m)
	}
	if c := f.last("squeue"); c.String() != "squeue -h -t all -u root -O "+squeueFields {
		t.Errorf("squeue call: %s", c)
	}
	if c := f.last("sacct"); c.String() != "sacct -X --parsable2 --noheader -j 25_4,999 -o JobID,State,ExitCode,Reason" {
		t.Errorf("sacct call: %s", c)
	}
	exit := func(n int) *int { return &n }
	want := map[batch.JobID]batch.JobStatus{
		"17":    {State: batch.Running, Native: "RUNNING", Node: "vm"},
		"18":    {State: batch.Cancelled, Native: "CANCELLED", Node: "vm", ExitCode: exit(143)},
		"19":    {State: batch.Running, Native: "RUNNING", Node: "vm"},
		"20":    {State: batch.Failed, Native: "FAILED", Node: "vm", Reason: "NonZeroExitCode", ExitCode: exit(7)},
		"21":    {State: batch.Failed, Native: "FAILED", Node: "vm", Reason: "JobLaunchFailure", ExitCode: exit(137)},
		"22":    {State: batch.Pending, Native: "PENDING", Reason: "JobHeldUser"},
		"24":    {State: batch.Running, Native: "PENDING*7,RUNNING*3", Node: "vm"},
		"24_5":  {State: batch.Pending, Native: "PENDING", Reason: "JobArrayTaskLimit"},
		"26":    {State: batch.Running, Native: "RUNNING", Node: "vm"}, // 24_0 by its own job id
		"25_3":  {State: batch.Pending, Native: "PENDING", Reason: "JobHeldUser"},
		"25_4":  {State: batch.Unknown, Reason: "not in squeue; Slurm accounting storage is disabled"},
		"999":   {State: batch.Unknown, Reason: "not in squeue; Slurm accounting storage is disabled"},
		"2":     {State: batch.Failed, Native: "FAILED", Node: "vm", Reason: "NonZeroExitCode", ExitCode: exit(3)},
		"3_11":  {State: batch.Completed, Native: "COMPLETED", Node: "vm", ExitCode: exit(0)},
		"3":     {State: batch.Completed, Native: "COMPLETED*12", Node: "vm", ExitCode: exit(0)},
		"bogus": {State: batch.Unknown, Reason: "not a Slurm job id"},
	}
	for id, w := range want {
		w.ID = id
		if g, ok := got[id]; !ok || !reflect.DeepEqual(g, w) {
			t.Errorf("%s: got %s, want %s", id, fmtStatus(g), fmtStatus(w))
		}
	}
	// the tasks of requested arrays are reported too
	for i := 0; i < 10; i++ {
		id := batch.JobID(fmt.Sprintf("24_%d", i))
		st := got[id].State
		if (i < 3 && st != batch.Running) || (i >= 3 && st != batch.Pending) {
			t.Errorf("%s: %s", id, st)
		}
	}
	for i := 0; i < 12; i++ {
		if st := got[batch.JobID(fmt.Sprintf("3_%d", i))].State; st != batch.Completed {
			t.Errorf("3_%d: %s", i, st)
		}
	}
	if _, ok := got["25_1"]; ok {
		t.Error("25_1 reported although neither 25 nor 25_1 was asked for")
	}
}

func fmtStatus(s batch.JobStatus) string {
	e := "nil"
	if s.ExitCode != nil {
		e = fmt.Sprint(*s.ExitCode)
	}
	return fmt.Sprintf("{%s %s native=%q reason=%q exit=%s node=%q}", s.ID, s.State, s.Native, s.Reason, e, s.Node)
}

func TestStatusSacct(t *testing.T) {
	f := newFake(map[string]reply{
		"squeue": {Stdout: ""},
		"sacct":  {Stdout: string(readTestdata(t, "sacct-synthetic.txt"))},
	})
	got, err := New(f, WithUser("")).Status(t.Context(), []batch.JobID{"501", "502", "503", "504", "505", "505_3", "506", "507", "508", "509"})
	if err != nil {
		t.Fatal(err)
	}
	if c := f.last("squeue"); c.String() != "squeue -h -t all -O "+squeueFields {
		t.Errorf("squeue call: %s", c)
	}
	for id, want := range map[batch.JobID]string{
		"501": "COMPLETED/0", "502": "FAILED/3", "503": "CANCELLED/143", "504": "TIMEOUT/0",
		"505": "PENDING/-", "505_0": "COMPLETED/0", "505_1": "FAILED/253", "505_3": "PENDING/-", "505_4": "PENDING/-",
		"506": "FAILED/0", "507": "RUNNING/-", "508": "UNKNOWN/-", "509": "UNKNOWN/-",
	} {
		st := got[id]
		e := "-"
		if st.ExitCode != nil {
			e = fmt.Sprint(*st.ExitCode)
		}
		if g := string(st.State) + "/" + e; g != want {
			t.Errorf("%s: %s, want %s (%s)", id, g, want, fmtStatus(st))
		}
	}
	if got["503"].Native != "CANCELLED by 0" || got["509"].Reason != "not in squeue or sacct" {
		t.Errorf("503 %s, 509 %s", fmtStatus(got["503"]), fmtStatus(got["509"]))
	}
}

func TestStatusErrors(t *testing.T) {
	f := newFake(map[string]reply{"squeue": {ExitCode: 1, Stderr: "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"}})
	if _, err := New(f).Status(t.Context(), []batch.JobID{"1"}); err == nil || !strings.Contains(err.Error(), "Unable to contact") {
		t.Errorf("controller down: %v", err)
	}
	f = newFake(map[string]reply{"squeue": {}, "sacct": {ExitCode: 1, Stderr: "sacct: error: Problem talking to the database: Connection refused\n"}})
	if _, err := New(f).Status(t.Context(), []batch.JobID{"1"}); err == nil {
		t.Error("slurmdbd down: no error")
	}
	f = newFake(map[string]reply{"squeue": {}, "sacct": {Err: fmt.Errorf("run sacct: %w", exec.ErrNotFound)}})
	got, err := New(f).Status(t.Context(), []batch.JobID{"1"})
	if err != nil || got["1"].State != batch.Unknown {
		t.Errorf("no sacct: %v %v", got, err)
	}
	f = newFake(nil)
	got, err = New(f).Status(t.Context(), nil)
	if err != nil || len(got) != 0 || len(f.calls) != 0 {
		t.Errorf("no ids: %v %v %v", got, err, f.calls)
	}
}

func TestCancel(t *testing.T) {
	f := newFake(map[string]reply{"scancel": {}})
	if err := New(f).Cancel(t.Context(), "12_3"); err != nil {
		t.Fatal(err)
	}
	if c := f.last("scancel"); c.String() != "scancel 12_3" {
		t.Errorf("call %s", c)
	}
	for _, msg := range []string{
		"scancel: error: Kill job error on job id 12: Invalid job id specified\n",
		"scancel: error: Kill job error on job id 12: Job/step already completing or completed\n",
	} {
		f = newFake(map[string]reply{"scancel": {ExitCode: 1, Stderr: msg}})
		if err := New(f).Cancel(t.Context(), "12"); err != nil {
			t.Errorf("%q: %v", msg, err)
		}
	}
	f = newFake(map[string]reply{"scancel": {ExitCode: 1, Stderr: "scancel: error: Kill job error on job id 12: Access/permission denied\n"}})
	err := New(f).Cancel(t.Context(), "12")
	var ce *batch.CommandError
	if !errors.As(err, &ce) {
		t.Errorf("permission denied: %v", err)
	}
	if err := New(f).Cancel(t.Context(), "12; rm -rf /"); err == nil {
		t.Error("bad id accepted")
	}
}

func TestExpandHostlist(t *testing.T) {
	for in, want := range map[string]string{
		"vm":                    "vm",
		"n[01-03,7],gpu1":       "n01 n02 n03 n7 gpu1",
		"r[1-2]-c[08-09]":       "r1-c08 r1-c09 r2-c08 r2-c09",
		"a,b , c":               "a b c",
		"node[9-11]":            "node9 node10 node11",
		"x[1]y":                 "x1y",
		"cn[0998-1001].cluster": "cn0998.cluster cn0999.cluster cn1000.cluster cn1001.cluster",
	} {
		got, err := ExpandHostlist(in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("ExpandHostlist(%q) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"n[1-", "n]", "n[a-b]", "n[5-1]", "n[0-999999999]"} {
		if _, err := ExpandHostlist(in); err == nil {
			t.Errorf("ExpandHostlist(%q): no error", in)
		}
	}
}

func TestParseEndTime(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	for in, want := range map[string]time.Time{
		"2026-11-22T04:56:15|1:00\n":         time.Date(2026, 11, 22, 4, 56, 15, 0, loc),
		"banner\n2026-11-22T04:56:15|1:00\n": time.Date(2026, 11, 22, 4, 56, 15, 0, loc),
		"2027-11-22T04:55:15|UNLIMITED\n":    {},
		"N/A|1:00\n":                         {},
		"Unknown|30:00":                      {},
	} {
		got, err := ParseEndTime([]byte(in), loc)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseEndTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "tomorrow|1:00", "2026-13-40T99:00:00|1:00"} {
		if _, err := ParseEndTime([]byte(in), loc); err == nil {
			t.Errorf("ParseEndTime(%q): no error", in)
		}
	}
}

func TestDetectAllocation(t *testing.T) {
	env := map[string]string{
		"SLURM_JOB_ID": "130", "SLURM_ARRAY_JOB_ID": "127", "SLURM_ARRAY_TASK_ID": "3",
		"SLURM_JOB_NODELIST": "cn[01-02]", "SLURM_CPUS_ON_NODE": "16", "SLURM_GPUS_ON_NODE": "4",
	}
	f := newFake(map[string]reply{"squeue": {Stdout: "2026-11-22T06:00:00|1:00:00\n"}})
	a, ok, err := DetectAllocationContext(t.Context(), func(k string) string { return env[k] }, f, time.UTC)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	want := &batch.Allocation{Scheduler: "slurm", JobID: "127_3", ArrayIdx: 3, Nodes: []string{"cn01", "cn02"},
		CPUs: 16, GPUs: 4, End: time.Date(2026, 11, 22, 6, 0, 0, 0, time.UTC)}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got %+v\nwant %+v", a, want)
	}
	if c := f.last("squeue"); c.String() != "squeue -h -t all -j 130 -o %e|%l" {
		t.Errorf("call %s", c)
	}

	// no array, CPUs from SLURM_JOB_CPUS_PER_NODE, GPUs from a typed count, no commander
	env = map[string]string{"SLURM_JOBID": "77", "SLURM_NODELIST": "vm", "SLURM_JOB_CPUS_PER_NODE": "4(x2)", "SLURM_GPUS_PER_NODE": "a100:2"}
	a, ok, err = DetectAllocation(func(k string) string { return env[k] }, nil)
	if err != nil || !ok || a.JobID != "77" || a.ArrayIdx != -1 || a.CPUs != 4 || a.GPUs != 2 || !a.End.IsZero() {
		t.Errorf("%+v %v %v", a, ok, err)
	}

	// outside Slurm
	if a, ok, err := DetectAllocation(func(string) string { return "" }, f); a != nil || ok || err != nil {
		t.Errorf("outside Slurm: %v %v %v", a, ok, err)
	}

	// squeue fails: the allocation, and the error
	f = newFake(map[string]reply{"squeue": {ExitCode: 1, Stderr: string(readTestdata(t, "squeue-22.05-invalid-id.stderr"))}})
	env = map[string]string{"SLURM_JOB_ID": "5"}
	a, ok, err = DetectAllocation(func(k string) string { return env[k] }, f)
	if a == nil || !ok || err == nil || !strings.Contains(err.Error(), "Invalid job id") {
		t.Errorf("squeue failure: %+v %v %v", a, ok, err)
	}
}

// squeue-22.05-timeout.txt: a `sleep 300` job with --time=1, killed by
// Slurm 22.05.8 at its walltime (SIGTERM: raw exit_code 15).
func TestStatusTimeoutRecorded(t *testing.T) {
	f := newFake(map[string]reply{"squeue": {Stdout: string(readTestdata(t, "squeue-22.05-timeout.txt"))}})
	got, err := New(f).Status(t.Context(), []batch.JobID{"17"})
	if err != nil {
		t.Fatal(err)
	}
	st := got["17"]
	if st.State != batch.Timeout || st.Native != "TIMEOUT" || st.Reason != "TimeLimit" || st.ExitCode == nil || *st.ExitCode != 143 {
		t.Errorf("%s", fmtStatus(st))
	}
}
