package pbs

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./pbs -run %s -update)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", t.Name(), p, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	cases := map[string]*batch.JobSpec{
		"render-minimal": {Command: []string{"scalebox", "pilot"}},
		"render-full": {
			Name: "sb-pilot", Queue: "workq", Account: "proj42", QOS: "high",
			Walltime: 90*time.Minute + 1500*time.Millisecond, Nodes: 2, TasksPerNode: 4, CoresPerTask: 2,
			MemoryMB: 16000, GPUs: 1, ArraySize: 8, Output: "/scratch/out/%x.log", Error: "/scratch/err.log",
			SignalMargin: 5 * time.Minute, Exclusive: true, Constraint: "model=skylake",
			Extra: []string{"-m abe", "#PBS -M me@example.org", "-W umask=022"},
			Env:   map[string]string{"SCALEBOX_BROKER": "http://login:8080", "WEIRD": "it's $HOME `x` \"q\"\\"},
			Command: []string{"/opt/scalebox/bin/scalebox", "pilot", "--site", "hpc one", "--label", "a'b",
				"--empty", "", "--glob", "*.txt"},
			WorkDir: "/scratch/my dir",
		},
		"render-joined": {
			Name: "joined", Walltime: 100 * time.Hour, Output: "/tmp/pilot.out", Exclusive: true,
			Command: []string{"sleep", "1"},
		},
	}
	s := New(nil)
	for name, spec := range cases {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := s.Render(&b, spec); err != nil {
				t.Fatal(err)
			}
			golden(t, name, b.Bytes())
		})
	}
}

func TestRenderRejects(t *testing.T) {
	s := New(nil)
	for name, spec := range map[string]*batch.JobSpec{
		"no command":   {},
		"newline name": {Name: "a\n#PBS -q evil", Command: []string{"x"}},
		"space name":   {Name: "a b", Command: []string{"x"}},
		"extra nl":     {Extra: []string{"-m a\nrm -rf /"}, Command: []string{"x"}},
		"bad env":      {Env: map[string]string{"A B": "x"}, Command: []string{"x"}},
		"negative":     {Nodes: -1, Command: []string{"x"}},
	} {
		if err := s.Render(&bytes.Buffer{}, spec); err == nil {
			t.Errorf("%s: Render accepted %+v", name, spec)
		}
	}
}

// TestRenderQuotingRoundTrip runs the rendered command through bash and
// checks every word arrives intact.
func TestRenderQuotingRoundTrip(t *testing.T) {
	words := []string{"printf", `%s\n`, "plain", "with space", "it's", `"dq"`, "$HOME", "`id`", `back\slash`, "", "*", "new\nline", "ü"}
	var b bytes.Buffer
	if err := New(nil).Render(&b, &batch.JobSpec{Command: words, WorkDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	out, err := runBash(b.String())
	if err != nil {
		t.Fatal(err, out)
	}
	want := strings.Join(words[2:], "\n") + "\n"
	if out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}

func TestWalltime(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{time.Second, "00:00:01"}, {1500 * time.Millisecond, "00:00:02"}, {90 * time.Minute, "01:30:00"}, {100 * time.Hour, "100:00:00"}} {
		if got := FormatWalltime(c.d); got != c.want {
			t.Errorf("FormatWalltime(%v) = %s, want %s", c.d, got, c.want)
		}
		back, err := ParseWalltime(c.want)
		if err != nil || back < c.d || back-c.d >= time.Second {
			t.Errorf("ParseWalltime(%s) = %v, %v", c.want, back, err)
		}
	}
	for s, want := range map[string]time.Duration{"10": 10 * time.Second, "2:30": 150 * time.Second, "00:00:10": 10 * time.Second, "1.5": 1500 * time.Millisecond} {
		if got, err := ParseWalltime(s); err != nil || got != want {
			t.Errorf("ParseWalltime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "bogus", "1:2:3:4", "-5", "1e3", "::"} {
		if _, err := ParseWalltime(s); err == nil {
			t.Errorf("ParseWalltime(%q) accepted", s)
		}
	}
}
