package pbs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/batch"
)

// sampleDocs extracts the qstat JSON documents of a recorded sample: a
// line "{" at column 0 up to a line starting with "}" (kept as "}" since
// the recordings append "rc=N" to a last line without newline). For the
// grep'ed fragments of exit-codes-and-errors.txt, each "$ qstat ..."
// section's attribute lines are wrapped back into a document.
func sampleDocs(t *testing.T, data []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	var cur *bytes.Buffer
	var frag *bytes.Buffer
	fragJob := regexp.MustCompile(`^\s*("[^"]+"):\{\s*$`)
	fragAttr := regexp.MustCompile(`^\s+"[A-Za-z_]+":.*,$`)
	inFrag, jobOpen := false, false
	flushFrag := func() {
		if frag != nil && frag.Len() > 0 {
			if jobOpen {
				frag.WriteString("}")
			}
			docs = append(docs, []byte(`{"pbs_server":"pbshost","Jobs":{`+frag.String()+"}}"))
		}
		frag, inFrag, jobOpen = nil, false, false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur != nil:
			if strings.HasPrefix(line, "}") {
				cur.WriteString("}")
				docs = append(docs, cur.Bytes())
				cur = nil
			} else {
				cur.WriteString(line + "\n")
			}
		case line == "{":
			flushFrag()
			cur = &bytes.Buffer{}
			cur.WriteString("{\n")
		case strings.HasPrefix(line, "$ qstat") && strings.Contains(line, "| grep"):
			flushFrag()
			inFrag = true
			frag = &bytes.Buffer{}
			if m := regexp.MustCompile(`([0-9]+(\[\])?\.pbshost)`).FindStringSubmatch(line); m != nil && !strings.Contains(line, "-t") {
				frag.WriteString(`"` + m[1] + `":{`)
				jobOpen = true
			}
		case inFrag && fragJob.MatchString(line):
			if jobOpen {
				frag.WriteString("},")
			}
			frag.WriteString(fragJob.FindStringSubmatch(line)[1] + ":{")
			jobOpen = true
		case inFrag && fragAttr.MatchString(line):
			s := strings.TrimSuffix(strings.TrimSpace(line), ",")
			if !strings.HasSuffix(frag.String(), "{") {
				frag.WriteString(",")
			}
			frag.WriteString(s)
		default:
			if inFrag {
				flushFrag()
			}
		}
	}
	flushFrag()
	return docs
}

func summarize(res QstatResult) string {
	ids := make([]string, 0, len(res.Jobs))
	for id := range res.Jobs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var b strings.Builder
	for _, id := range ids {
		st := StatusOf(res.Jobs[id])
		exit := "-"
		if st.ExitCode != nil {
			exit = fmt.Sprint(*st.ExitCode)
		}
		fmt.Fprintf(&b, "  %-16s %-9s native=%s exit=%s node=%q reason=%q\n", id, st.State, st.Native, exit, st.Node, st.Reason)
	}
	return b.String()
}

// TestSamples parses every recorded OpenPBS 23.06 output in
// testdata/samples and compares a summary with testdata/samples.golden
// (reviewed by hand); key facts are also asserted below.
func TestSamples(t *testing.T) {
	files, err := filepath.Glob("testdata/samples/*")
	if err != nil || len(files) < 17 {
		t.Fatalf("samples: %v %d", err, len(files))
	}
	var out strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		fmt.Fprintf(&out, "== %s\n", name)
		if strings.HasSuffix(name, ".json") {
			res, err := ParseQstat(data)
			fmt.Fprintf(&out, "whole file: err=%v server=%q version=%q\n%s", err, res.Server, res.Version, summarize(res))
			continue
		}
		if name == "running-qstat-f-plain.txt" || name == "README.md" {
			// not JSON: the parser must say so without panicking
			res, err := ParseQstat(data)
			fmt.Fprintf(&out, "not json: err!=nil %v, jobs=%d\n", err != nil, len(res.Jobs))
			continue
		}
		for i, doc := range sampleDocs(t, data) {
			res, err := ParseQstat(doc)
			fmt.Fprintf(&out, "doc %d: err=%v\n%s", i, err, summarize(res))
		}
		id, err := ParseSubmit(data)
		fmt.Fprintf(&out, "whole file as qsub output: %q %v\n", id, err)
		fmt.Fprintf(&out, "qstat stderr lines: %v\n", ParseQstatErrors(data))
		sub := regexp.MustCompile(`(?m)^(?:AR=|JOB=|W=|rc=0 id=)?([0-9]+(?:\[\])?\.pbshost)(?: W2=.*)?$`)
		for _, m := range sub.FindAllSubmatch(data, -1) {
			id, err := ParseSubmit(append([]byte("banner: welcome\n"), m[1]...))
			fmt.Fprintf(&out, "submit %s -> %s %v\n", m[1], id, err)
		}
	}
	golden(t, "samples", []byte(out.String()))
}

func parseSample(t *testing.T, file string, doc int) map[string]batch.JobStatus {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata/samples", file))
	if err != nil {
		t.Fatal(err)
	}
	docs := [][]byte{data}
	if strings.HasSuffix(file, ".txt") {
		docs = sampleDocs(t, data)
	}
	res, err := ParseQstat(docs[doc])
	if err != nil {
		t.Fatalf("%s doc %d: %v", file, doc, err)
	}
	m := map[string]batch.JobStatus{}
	for id, j := range res.Jobs {
		m[id] = StatusOf(j)
	}
	return m
}

func TestSampleFacts(t *testing.T) {
	check := func(m map[string]batch.JobStatus, id string, want batch.State, exit any) {
		t.Helper()
		st, ok := m[id]
		if !ok {
			t.Fatalf("%s missing from %v", id, m)
		}
		if st.State != want {
			t.Errorf("%s: state %s (native %s), want %s", id, st.State, st.Native, want)
		}
		switch e := exit.(type) {
		case nil:
			if st.ExitCode != nil {
				t.Errorf("%s: exit %d, want none", id, *st.ExitCode)
			}
		case int:
			if st.ExitCode == nil || *st.ExitCode != e {
				t.Errorf("%s: exit %v, want %d", id, st.ExitCode, e)
			}
		}
	}
	m := parseSample(t, "simple-qstat-f-json-running.txt", 0)
	check(m, "2.pbshost", batch.Running, nil)
	if m["2.pbshost"].Node != "pbshost" {
		t.Errorf("node %q", m["2.pbshost"].Node)
	}
	m = parseSample(t, "walltime.txt", 0)
	check(m, "14.pbshost", batch.Timeout, -29)
	check(m, "15.pbshost", batch.Timeout, -29)
	m = parseSample(t, "qdel-after.txt", 0)
	check(m, "9.pbshost", batch.Cancelled, 271)
	check(m, "11.pbshost", batch.Cancelled, nil)
	check(m, "12.pbshost", batch.Cancelled, nil)
	m = parseSample(t, "multi-jobs-qstat-f.json", 0)
	check(m, "2.pbshost", batch.Running, 0) // E: exiting
	check(m, "9.pbshost", batch.Running, nil)
	check(m, "10.pbshost", batch.Pending, nil)
	check(m, "12.pbshost", batch.Pending, nil) // H
	m = parseSample(t, "simple2-after-usecp.txt", 0)
	check(m, "3.pbshost", batch.Completed, 0)
	m = parseSample(t, "root-job-finished.json", 0)
	check(m, "4.pbshost", batch.Completed, 0)
	// exit-codes-and-errors.txt fragments: exit 3, kill -9, SIGSEGV, and
	// the array whose parent says 0 although subjob 2 failed.
	m = parseSample(t, "exit-codes-and-errors.txt", 0)
	check(m, "2.pbshost", batch.Failed, 3)
	m = parseSample(t, "exit-codes-and-errors.txt", 1)
	check(m, "3.pbshost", batch.Failed, 137)
	m = parseSample(t, "exit-codes-and-errors.txt", 2)
	check(m, "4.pbshost", batch.Failed, 139)
	m = parseSample(t, "exit-codes-and-errors.txt", 3)
	check(m, "5[].pbshost", batch.Failed, 0)
	check(m, "5[1].pbshost", batch.Completed, 0)
	check(m, "5[2].pbshost", batch.Failed, 5)
	// empty server: no Jobs key, no trailing newline.
	m = parseSample(t, "empty-and-errors.txt", 0)
	if len(m) != 0 {
		t.Errorf("empty: %v", m)
	}
	// array.txt: queued parent + subjobs, then finished with "timestamp":"".
	data, _ := os.ReadFile("testdata/samples/array.txt")
	docs := sampleDocs(t, data)
	m = parseSample(t, "array.txt", 1)
	if len(m) != 5 {
		t.Errorf("array -t: %d jobs", len(m))
	}
	check(m, "13[].pbshost", batch.Pending, nil)
	check(m, "13[3].pbshost", batch.Pending, nil)
	last := len(docs) - 1
	if !bytes.Contains(docs[last], []byte(`"timestamp":""`)) && !bytes.Contains(docs[last-1], []byte(`"timestamp":""`)) {
		t.Log("note: timestamp quirk not in the last documents")
	}
	for i := range docs {
		if _, err := ParseQstat(docs[i]); err != nil {
			t.Errorf("array.txt doc %d: %v", i, err)
		}
	}
}

func TestParseSubmit(t *testing.T) {
	for in, want := range map[string]batch.JobID{
		"123.pbshost\n": "123.pbshost",
		"13[].pbshost":  "13[].pbshost",
		"*** Welcome to the cluster ***\nqsub: warning: project not set\n42.login1.cluster.org\n": "42.login1.cluster.org",
		"77\n":            "77",
		"1.a\n2.b\nnoise": "2.b",
		"  9.srv  \r\n\n": "9.srv",
	} {
		got, err := ParseSubmit([]byte(in))
		if err != nil || got != want {
			t.Errorf("ParseSubmit(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "qsub: Bad UID for job execution\n", "Job submitted\n", "13[1].pbshost"} {
		if id, err := ParseSubmit([]byte(in)); err == nil {
			t.Errorf("ParseSubmit(%q) = %q, want an error", in, id)
		}
	}
}

// TestParseDefensive: invalid escapes, a broken job among good ones,
// truncation, odd types.
func TestParseDefensive(t *testing.T) {
	good := `"1.s":{"job_state":"R","exec_host":"n1/0*2+n2/0*2","Variable_List":{"X":"C:\Users\me","Y":"tab	here"}}`
	bad := `"2.s":{"job_state":"F","Exit_status":-29,"comment":"walltime", "Resource_List":{"walltime":00:10:00}}`
	third := `"3[1].s":{"job_state":"X","Exit_status":"0","array_id":"3[].s","array_index":1}`
	in := `{"timestamp":"","pbs_version":"23.06.06","pbs_server":"s","Jobs":{` + good + "," + bad + "," + third + `}}`
	res, err := ParseQstat([]byte(in))
	if err == nil {
		t.Error("want an error for the broken job")
	}
	if len(res.Jobs) != 3 {
		t.Fatalf("jobs %v", res.Jobs)
	}
	if st := StatusOf(res.Jobs["1.s"]); st.State != batch.Running || st.Node != "n1" {
		t.Errorf("1.s: %+v", st)
	}
	if st := StatusOf(res.Jobs["2.s"]); st.State != batch.Timeout || *st.ExitCode != -29 {
		t.Errorf("2.s salvaged: %+v", st)
	}
	if j := res.Jobs["3[1].s"]; StatusOf(j).State != batch.Completed || j.ArrayIndex != 1 || j.ArrayID != "3[].s" {
		t.Errorf("3[1].s: %+v", j)
	}
	// truncated output keeps the complete jobs
	res, _ = ParseQstat([]byte(in[:len(in)-40]))
	if _, ok := res.Jobs["1.s"]; !ok {
		t.Errorf("truncated: %v", res.Jobs)
	}
	// unknown state letter
	res, _ = ParseQstat([]byte(`{"Jobs":{"5.s":{"job_state":"Z"}}}`))
	if st := StatusOf(res.Jobs["5.s"]); st.State != batch.Unknown || st.Native != "Z" {
		t.Errorf("Z: %+v", st)
	}
}

func TestStateTable(t *testing.T) {
	i := func(v int) *int { return &v }
	for _, c := range []struct {
		j    Job
		want batch.State
	}{
		{Job{State: "Q"}, batch.Pending}, {Job{State: "H"}, batch.Pending}, {Job{State: "W"}, batch.Pending},
		{Job{State: "T"}, batch.Pending}, {Job{State: "R"}, batch.Running}, {Job{State: "E"}, batch.Running},
		{Job{State: "B"}, batch.Running}, {Job{State: "S"}, batch.Running}, {Job{State: "U"}, batch.Running},
		{Job{State: "M"}, batch.Unknown}, {Job{State: ""}, batch.Unknown},
		{Job{State: "F", ExitStatus: i(0)}, batch.Completed}, {Job{State: "X", ExitStatus: i(0)}, batch.Completed},
		{Job{State: "F", ExitStatus: i(1)}, batch.Failed}, {Job{State: "F", ExitStatus: i(137)}, batch.Failed},
		{Job{State: "F", ExitStatus: i(-29)}, batch.Timeout}, {Job{State: "F", ExitStatus: i(271)}, batch.Cancelled},
		{Job{State: "F", ExitStatus: i(265)}, batch.Cancelled}, {Job{State: "F", ExitStatus: i(-1)}, batch.Failed},
		{Job{State: "F"}, batch.Cancelled}, {Job{State: "X"}, batch.Cancelled},
		{Job{State: "F", ExitStatus: i(0), Array: true, Substate: 93}, batch.Failed},
		{Job{State: "F", ExitStatus: i(0), Array: true, Substate: 92}, batch.Completed},
	} {
		if got := StatusOf(c.j).State; got != c.want {
			t.Errorf("%+v: %s, want %s", c.j, got, c.want)
		}
	}
}

func TestQstatErrors(t *testing.T) {
	g := ParseQstatErrors([]byte("qstat: Unknown Job Id 99999.pbshost\nqstat: 9.pbshost Job has finished, use -x or -H to obtain historical job information\nnoise\n"))
	if len(g) != 2 || g["99999.pbshost"] == "" || !strings.Contains(g["9.pbshost"], "finished") {
		t.Errorf("%v", g)
	}
}

func FuzzParseQstat(f *testing.F) {
	files, _ := filepath.Glob("testdata/samples/*")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"Jobs":{"1.s":{"job_state":"F","Exit_status":"x\q"},"2":{`))
	f.Add([]byte(`{"Jobs":{"a":}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, _ := ParseQstat(b)
		for _, j := range res.Jobs {
			st := StatusOf(j)
			if st.State == "" {
				t.Fatalf("empty state for %+v", j)
			}
		}
		matchStatus([]batch.JobID{"1", "2.s", "x[3].y"}, res.Jobs, ParseQstatErrors(b))
	})
}

func FuzzParseSubmit(f *testing.F) {
	f.Add([]byte("123.pbshost\n"))
	f.Add([]byte("banner\n13[].pbshost"))
	f.Add([]byte("qsub: Bad UID for job execution"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseSubmit(b)
		if err == nil && (id == "" || strings.ContainsAny(string(id), " \n\t")) {
			t.Fatalf("bad id %q", id)
		}
	})
}

func FuzzParseWalltime(f *testing.F) {
	for _, s := range []string{"10", "00:00:10", "1:2:3", "1.5", "bogus", "::", "99999999999:00:00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseWalltime(s)
		if err == nil && d < 0 {
			t.Fatalf("negative %v for %q", d, s)
		}
	})
}
