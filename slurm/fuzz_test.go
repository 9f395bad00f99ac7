package slurm

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

func addTestdata(f *testing.F, files ...string) {
	for _, name := range files {
		f.Add(readTestdata(f, name))
	}
}

func FuzzParseSbatch(f *testing.F) {
	addTestdata(f, "sbatch-22.05-parsable.stdout", "sbatch-federation.stdout", "sbatch-banner.stdout")
	f.Add([]byte("Submitted batch job 1 on cluster x\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		id, _, err := ParseSbatch(out)
		if err == nil && !isDigits(string(id)) {
			t.Fatalf("id %q", id)
		}
	})
}

func FuzzParseSqueue(f *testing.F) {
	addTestdata(f, "squeue-22.05-mixed.txt", "squeue-22.05-timeout.txt")
	f.Add([]byte("5_[1-3,7-9:2%4]|5|5|1-3,7-9:2%4|PENDING|0||Reason with | bar|\n"))
	f.Add([]byte("5_[0-4294967295]|5|5|0-4294967295|PENDING|0|||\n"))
	f.Fuzz(func(t *testing.T, out []byte) {
		recs, _ := ParseSqueue(out)
		ids := []batch.JobID{"5", "5_2", "1", "24", "24_9"}
		for _, r := range recs {
			ids = append(ids, batch.JobID(r.Key), batch.JobID(r.RawID))
			r.tasks(10)
		}
		fc := newFake(map[string]reply{"squeue": {Stdout: string(out)}, "sacct": {Stdout: string(out)}})
		res, err := New(fc, WithMaxArrayTasks(100)).Status(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if _, ok := res[id]; !ok {
				t.Fatalf("no status for %q", id)
			}
		}
	})
}

func FuzzParseSacct(f *testing.F) {
	addTestdata(f, "sacct-synthetic.txt", "sacct-22.05-disabled.stdout")
	f.Fuzz(func(t *testing.T, out []byte) {
		recs, _ := ParseSacct(out)
		for _, r := range recs {
			r.tasks(10)
			MapState(r.Native)
		}
	})
}

func FuzzExpandHostlist(f *testing.F) {
	for _, s := range []string{"vm", "n[01-03,7],gpu1", "r[1-2]-c[08-09]", "n[1-", "a[0-99999]b[0-99999]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		hosts, _ := ExpandHostlist(s)
		if len(hosts) > maxHosts {
			t.Fatalf("%d hosts", len(hosts))
		}
	})
}

func FuzzParseEndTime(f *testing.F) {
	f.Add([]byte("2026-11-22T04:56:15|1:00\n"))
	f.Add([]byte("N/A|UNLIMITED"))
	f.Fuzz(func(t *testing.T, out []byte) {
		ParseEndTime(out, time.UTC)
	})
}

// FuzzRender: whatever the spec's strings, a rendered script has only
// directive lines before its body (no value can break out of its #SBATCH
// line), and the command line is the last line.
func FuzzRender(f *testing.F) {
	f.Add("pilot", "batch", "--qos=x", "KEY", "v'a\"l", "cmd", "a b")
	f.Add("a\nb", "#x", "", "A B", "$(id)", "", "\x00")
	f.Fuzz(func(t *testing.T, name, queue, extra, key, val, cmd, arg string) {
		spec := &batch.JobSpec{Name: name, Queue: queue, Constraint: val, Output: arg, Extra: []string{extra},
			Env: map[string]string{key: val}, Command: []string{cmd, arg}, Walltime: time.Hour}
		var b bytes.Buffer
		if err := New(nil).Render(&b, spec); err != nil {
			return
		}
		lines := strings.Split(b.String(), "\n")
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, "# Scalebox pilot job") {
				break
			}
			if !strings.HasPrefix(l, "#SBATCH ") {
				t.Fatalf("line %q among the directives of\n%s", l, b.String())
			}
		}
	})
}
