package slurm

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func hostile() []string {
	return []string{"a b", "it's", `"dq"`, "$(touch /tmp/pwned)", "`id`", "x;y", "a\nb", "*", "~", "", "--flag=v", "#c", "tab\there", `back\slash`, "ünï"}
}

var renderCases = map[string]*batch.JobSpec{
	"minimal": {Command: []string{"scalebox-pilot"}},
	"full": {
		Name: "sbx-primes", Queue: "batch", Account: "proj42", QOS: "normal",
		Walltime: 26*time.Hour + 3*time.Minute + 4*time.Second + time.Millisecond,
		Nodes:    2, TasksPerNode: 4, CoresPerTask: 8, MemoryMB: 16384, GPUs: 2,
		ArraySize: 10, Output: "/scratch/sbx/pilot-%A_%a.out", Error: "/scratch/sbx/pilot-%A_%a.err",
		SignalMargin: 90 * time.Second, Exclusive: true, Constraint: "haswell|broadwell", ExcludeHosts: []string{"node07", "node12"},
		Extra:   []string{"--reservation=maint", "  --mail-type=END  ", ""},
		Env:     map[string]string{"SCALEBOX_BROKER": "http://10.0.0.1:8080", "SCALEBOX_SITE": "hpc one"},
		Command: []string{"/opt/scalebox/bin/scalebox-pilot", "--site", "hpc", "--slots", "8"},
		WorkDir: "/scratch/sbx",
	},
	"hostile": {
		Name: `pilot #1 "quoted" 'single' back\slash`, Queue: "debug",
		Walltime: 30 * time.Minute, Output: "/tmp/with space/out %j.txt",
		Env:     map[string]string{"WEIRD": "$HOME `id` 'q' \"d\"\nline2", "EMPTY": ""},
		Command: append([]string{"printf", `%s\n`}, hostile()...),
	},
	"short-walltime": {Name: "w", Walltime: 61 * time.Second, SignalMargin: 500 * time.Millisecond, Command: []string{"sleep", "600"}},
}

func TestRenderGolden(t *testing.T) {
	s := New(nil, WithUser("alice"))
	for name, spec := range renderCases {
		t.Run(name, func(t *testing.T) {
			var b bytes.Buffer
			if err := s.Render(&b, spec); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", "render-"+name+".golden")
			if *update {
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if b.String() != string(want) {
				t.Errorf("rendered script differs from %s:\n%s", path, b.String())
			}
			if bash, err := exec.LookPath("bash"); err == nil {
				if out, err := exec.Command(bash, "-n", "-c", b.String()).CombinedOutput(); err != nil {
					t.Errorf("bash -n: %v: %s", err, out)
				}
			}
		})
	}
}

// TestRenderQuotingRoundTrip runs rendered scripts with bash: every command
// word and environment value must arrive unchanged, and nothing be executed.
func TestRenderQuotingRoundTrip(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	s := New(nil)
	words := hostile()
	var b bytes.Buffer
	spec := &batch.JobSpec{Name: "x", Command: append([]string{"printf", `%s\0`}, words...)}
	if err := s.Render(&b, spec); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bash, "-c", b.String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(words, "|") {
		t.Errorf("words:\n got %q\nwant %q", got, words)
	}

	b.Reset()
	env := map[string]string{"A": "$HOME `id` 'q' \"d\"\nline2 \\", "B": ""}
	spec = &batch.JobSpec{Env: env, Command: []string{"sh", "-c", `printf '%s\0%s' "$A" "$B"`}}
	if err := s.Render(&b, spec); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(bash, "-c", b.String()).Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := env["A"] + "\x00"; string(out) != want {
		t.Errorf("env: got %q want %q", out, want)
	}
}

func TestRenderErrors(t *testing.T) {
	s := New(nil)
	for name, spec := range map[string]*batch.JobSpec{
		"nil command":       {Name: "x"},
		"newline in name":   {Name: "a\n#SBATCH --uid=0", Command: []string{"true"}},
		"NUL in partition":  {Queue: "a\x00b", Command: []string{"true"}},
		"newline in extra":  {Extra: []string{"--qos=a\nrm -rf /"}, Command: []string{"true"}},
		"bad env name":      {Env: map[string]string{"A B": "x"}, Command: []string{"true"}},
		"env name injected": {Env: map[string]string{"A=1;id;B": "x"}, Command: []string{"true"}},
		"negative nodes":    {Nodes: -1, Command: []string{"true"}},
		"negative walltime": {Walltime: -time.Second, Command: []string{"true"}},
		"negative memory":   {MemoryMB: -1, Command: []string{"true"}},
		"signal too far":    {SignalMargin: 70000 * time.Second, Command: []string{"true"}},
	} {
		if err := s.Render(&bytes.Buffer{}, spec); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := s.Render(&bytes.Buffer{}, nil); err == nil {
		t.Error("nil spec: no error")
	}
}

func TestFormatTime(t *testing.T) {
	for d, want := range map[time.Duration]string{
		time.Second:                       "0-00:00:01",
		time.Millisecond:                  "0-00:00:01",
		90 * time.Minute:                  "0-01:30:00",
		48*time.Hour + 59*time.Second:     "2-00:00:59",
		23*time.Hour + 59*time.Minute + 1: "0-23:59:01",
	} {
		if got := FormatTime(d); got != want {
			t.Errorf("FormatTime(%v) = %s, want %s", d, got, want)
		}
	}
}

func TestSubmit(t *testing.T) {
	f := newFake(map[string]reply{"sbatch": {Stdout: "4242\n"}})
	s := New(f)
	id, err := s.Submit(t.Context(), renderCases["full"])
	if err != nil || id != "4242" {
		t.Fatalf("Submit = %q, %v", id, err)
	}
	c := f.last("sbatch")
	if strings.Join(c.Args, " ") != "--parsable" || !strings.Contains(c.Stdin, "#SBATCH --array=0-9\n") {
		t.Errorf("sbatch call %v, stdin:\n%s", c, c.Stdin)
	}

	f = newFake(map[string]reply{"sbatch": {ExitCode: 1, Stderr: "sbatch: error: invalid partition specified: nope\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"}})
	_, err = New(f).Submit(t.Context(), &batch.JobSpec{Queue: "nope", Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "Invalid partition name specified") {
		t.Errorf("refused submission: %v", err)
	}

	f = newFake(map[string]reply{"sbatch": {Stdout: "nothing useful\n"}})
	if _, err = New(f).Submit(t.Context(), &batch.JobSpec{Command: []string{"true"}}); err == nil {
		t.Error("no id: no error")
	}
}
