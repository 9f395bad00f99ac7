// Command report turns the output of `go test -bench` (bench.out, as `make
// bench` writes it) into bench.json, the raw figures with the machine, date
// and commit, and the generated part of BENCHMARKS.md: the targets
// side by side with the peers measured in the same run, then one table per
// benchmark. Everything between the markers
//
//	<!-- make bench: begin -->
//	<!-- make bench: end -->
//
// is replaced; the rest of BENCHMARKS.md (notes, older runs) is kept.
//
//	go run ./bench/report -in bench.out -json bench.json -md BENCHMARKS.md
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/perf/benchfmt"
)

const (
	beginMark = "<!-- make bench: begin -->"
	endMark   = "<!-- make bench: end -->"
)

// Result is one benchmark's figures.
type Result struct {
	Package string             `json:"package"`
	Name    string             `json:"name"` // without the Benchmark prefix and the -GOMAXPROCS suffix
	Iters   int                `json:"iters"`
	Metrics map[string]float64 `json:"metrics"` // unit → value
	order   []string
}

// Report is bench.json.
type Report struct {
	Date    string   `json:"date"`
	Commit  string   `json:"commit"`
	Machine Machine  `json:"machine"`
	Results []Result `json:"results"`
	Targets []Target `json:"targets"`
}

// Machine describes where the figures were taken.
type Machine struct {
	CPU      string `json:"cpu"`
	Cores    int    `json:"cores"`
	MemoryGB int    `json:"memory_gb"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

// Target is one of the targets, evaluated.
type Target struct {
	Figure    string  `json:"figure"`
	Value     float64 `json:"value"`
	Unit      string  `json:"unit"`
	From      string  `json:"from"`
	Peer      string  `json:"peer,omitempty"`
	PeerValue float64 `json:"peer_value,omitempty"`
	Want      string  `json:"want"`
	Met       bool    `json:"met"`
	Missing   string  `json:"missing,omitempty"` // why it could not be evaluated
}

func main() {
	in := flag.String("in", "bench.out", "output of go test -bench")
	jsonOut := flag.String("json", "bench.json", "raw figures (JSON)")
	md := flag.String("md", "BENCHMARKS.md", "markdown file whose generated section is replaced")
	flag.Parse()
	if err := run(*in, *jsonOut, *md); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, jsonOut, md string) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	results, cpu, err := parse(f, in)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return fmt.Errorf("%s: no benchmark results", in)
	}
	rep := &Report{Date: time.Now().UTC().Format("2006-01-02"), Commit: commit(), Machine: machine(cpu), Results: results}
	rep.Targets = targets(results)
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(jsonOut, append(js, '\n'), 0o644); err != nil {
		return err
	}
	old, err := os.ReadFile(md)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	updated, err := splice(string(old), render(rep))
	if err != nil {
		return fmt.Errorf("%s: %w", md, err)
	}
	return os.WriteFile(md, []byte(updated), 0o644)
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parse reads benchmark results; a line that is not one is skipped by
// benchfmt, a malformed result line is an error naming it.
func parse(r io.Reader, name string) ([]Result, string, error) {
	br := benchfmt.NewReader(r, name)
	var out []Result
	cpu := ""
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			return nil, "", rec
		case *benchfmt.Result:
			if v := rec.GetConfig("cpu"); v != "" {
				cpu = v
			}
			res := Result{Package: rec.GetConfig("pkg"), Name: procsSuffix.ReplaceAllString(string(rec.Name), ""),
				Iters: rec.Iters, Metrics: map[string]float64{}}
			for _, v := range rec.Values {
				if v.Unit == "ns/op" || v.Unit == "sec/op" { // benchfmt may have normalised ns/op
					continue // wall time per iteration: the benchmarks report their own figures
				}
				res.Metrics[v.Unit] = v.Value
				res.order = append(res.order, v.Unit)
			}
			out = append(out, res)
		}
	}
	return out, cpu, br.Err()
}

// best is the highest (or lowest) value of unit among results whose name
// matches re.
func best(results []Result, re, unit string, highest bool) (float64, string, bool) {
	rx := regexp.MustCompile(re)
	found := false
	var v float64
	var from string
	for _, r := range results {
		x, ok := r.Metrics[unit]
		if !ok || !rx.MatchString(r.Name) || math.IsNaN(x) {
			continue
		}
		if !found || (highest && x > v) || (!highest && x < v) {
			v, from, found = x, r.Name, true
		}
	}
	return v, from, found
}

// targets evaluates the targets on this run.
func targets(rs []Result) []Target {
	var out []Target
	atLeast := func(t Target, want float64) Target {
		t.Met, t.Want = t.Value >= want, "≥ "+num(want)
		return t
	}
	atMost := func(t Target, want float64) Target {
		t.Met, t.Want = t.Value <= want, "≤ "+num(want)
		return t
	}
	missing := func(figure, why string) Target { return Target{Figure: figure, Missing: why} }

	e2e, e2eFrom, okE2E := best(rs, `^EndToEnd/`, "tasks/s", true)
	if okE2E {
		out = append(out, atLeast(Target{Figure: "End to end, real-process tasks", Value: e2e, Unit: "tasks/s", From: e2eFrom}, 1500))
		ratio := func(figure, peer, re, unit string, want float64) {
			pv, pfrom, ok := best(rs, re, unit, true)
			if !ok || pv <= 0 {
				out = append(out, missing(figure, "no "+peer+" figure in this run"))
				return
			}
			out = append(out, atLeast(Target{Figure: figure, Value: e2e / pv, Unit: "×", From: e2eFrom,
				Peer: peer + " (" + pfrom + ")", PeerValue: pv}, want))
		}
		ratio("… share of the fork/exec ceiling", "fork/exec ceiling, tasks/s", `^ForkExecCeiling/`, "tasks/s", 0.6)
		ratio("… vs Dask distributed, same /bin/true tasks", "Dask, tasks/s", `^PeerDask`, "proc-tasks/s", 3)
		// Both of Snakemake's schedulers: its default (ILP, what `snakemake
		// -j 2` gives a user, as the issue runs it) and its fastest (greedy).
		ratio("… vs Snakemake -j 2 (default scheduler)", "Snakemake, jobs/s", `^PeerSnakemake/scheduler=ilp`, "jobs/s", 40)
		ratio("… vs Snakemake -j 2 --scheduler=greedy", "Snakemake, jobs/s", `^PeerSnakemake/scheduler=greedy`, "jobs/s", 40)
		ratio("… vs a Slurm job array", "Slurm array, tasks/s", `^SlurmArrayVsPilots`, "array-tasks/s", 300)
	} else {
		out = append(out, missing("End to end, real-process tasks", "no EndToEnd figure in this run"))
	}
	for _, c := range []struct {
		store string
		want  float64
	}{{"sqlite", 20000}, {"postgres", 10000}} {
		fig := "Dispatch capacity, " + c.store + ", batched"
		if v, from, ok := best(rs, `^DispatchCapacity/`+c.store+`/`, "tasks/s", true); ok {
			out = append(out, atLeast(Target{Figure: fig, Value: v, Unit: "tasks/s", From: from}, c.want))
		} else {
			out = append(out, missing(fig, "no DispatchCapacity figure"))
		}
	}
	for _, c := range []struct {
		q    string
		want float64
	}{{"p50", 2}, {"p99", 20}} {
		fig := "Dispatch latency to an idle pilot, " + c.q
		// The worse backend decides.
		if v, from, ok := best(rs, `^DispatchLatency/`, "add-leased-"+c.q+"-ms", true); ok {
			out = append(out, atMost(Target{Figure: fig, Value: v, Unit: "ms", From: from}, c.want))
		} else {
			out = append(out, missing(fig, "no DispatchLatency figure"))
		}
	}
	if v, from, ok := best(rs, `^QueueScale/`, "bytes/queued-task", true); ok {
		out = append(out, atMost(Target{Figure: "Broker memory per queued task (worst)", Value: v, Unit: "bytes", From: from}, 1024))
	} else {
		out = append(out, missing("Broker memory per queued task", "no QueueScale figure"))
	}
	for _, st := range []string{"sqlite", "postgres"} {
		fig := "Lease latency p50 at 1M queued ÷ at 10k, " + st
		big, _, ok1 := best(rs, `^QueueScale/`+st+`/queued=1000000$`, "lease-p50-ms", true)
		small, _, ok2 := best(rs, `^QueueScale/`+st+`/queued=10000$`, "lease-p50-ms", true)
		if !ok1 || !ok2 || small <= 0 {
			out = append(out, missing(fig, "no QueueScale figures at 10k and 1M"))
			continue
		}
		out = append(out, atMost(Target{Figure: fig, Value: big / small, Unit: "×", From: "QueueScale/" + st}, 2))
	}
	if v, from, ok := best(rs, `^PilotRSS`, "rss-mb", true); ok {
		out = append(out, atMost(Target{Figure: "Pilot peak RSS", Value: v, Unit: "MB", From: from}, 30))
	} else {
		out = append(out, missing("Pilot peak RSS", "no PilotRSS figure"))
	}
	return out
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return thousands(int64(math.Round(v)))
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// render writes the generated section.
func render(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Generated by `make bench` (bench/report) on %s, commit %s. Machine: %s, %d cores, %d GiB, %s, %s. Raw figures in `bench.json`.\n\n",
		rep.Date, rep.Commit, rep.Machine.CPU, rep.Machine.Cores, rep.Machine.MemoryGB, rep.Machine.Kernel, rep.Machine.Go)
	b.WriteString("### Targets\n\n| figure | this run | peer in the same run | target | met |\n|---|---|---|---|---|\n")
	for _, t := range rep.Targets {
		if t.Missing != "" {
			fmt.Fprintf(&b, "| %s | — | | | not measured: %s |\n", t.Figure, t.Missing)
			continue
		}
		peer := ""
		if t.Peer != "" {
			peer = fmt.Sprintf("%s %s", t.Peer, num(t.PeerValue))
		}
		met := "✘"
		if t.Met {
			met = "✔"
		}
		fmt.Fprintf(&b, "| %s | **%s %s** (%s) | %s | %s %s | %s |\n", t.Figure, num(t.Value), t.Unit, t.From, peer, t.Want, t.Unit, met)
	}
	// One table per benchmark function.
	var families []string
	byFamily := map[string][]Result{}
	for _, r := range rep.Results {
		fam, _, _ := strings.Cut(r.Name, "/")
		if _, ok := byFamily[fam]; !ok {
			families = append(families, fam)
		}
		byFamily[fam] = append(byFamily[fam], r)
	}
	for _, fam := range families {
		rs := byFamily[fam]
		var units []string
		for _, r := range rs {
			for _, u := range r.order {
				if !slices.Contains(units, u) {
					units = append(units, u)
				}
			}
		}
		fmt.Fprintf(&b, "\n### %s\n\n| benchmark | %s |\n|---|%s\n", fam, strings.Join(units, " | "), strings.Repeat("---|", len(units)))
		pkgs := map[string]bool{}
		for _, r := range rs {
			pkgs[r.Package] = true
		}
		for _, r := range rs {
			row := []string{r.Name}
			if len(pkgs) > 1 { // the same benchmark in several packages (the stores)
				row[0] = path.Base(r.Package) + ": " + r.Name
			}
			for _, u := range units {
				if v, ok := r.Metrics[u]; ok {
					row = append(row, num(v))
				} else {
					row = append(row, "")
				}
			}
			fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
		}
	}
	return b.String()
}

// splice replaces the text between the markers (appending them when absent).
func splice(doc, gen string) (string, error) {
	block := beginMark + "\n" + gen + endMark + "\n"
	i, j := strings.Index(doc, beginMark), strings.Index(doc, endMark)
	switch {
	case i < 0 && j < 0:
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n## Latest `make bench`\n\n" + block, nil
	case i < 0 || j < i:
		return "", fmt.Errorf("markers %q and %q are not in order", beginMark, endMark)
	}
	return doc[:i] + block + doc[j+len(endMark):], nil
}

// commit names the checked-out commit, "-dirty" if code differs from it;
// the docs and figures (*.md, bench.json) do not count, since make bench
// itself rewrites them.
func commit() string {
	out, err := exec.Command("git", "describe", "--always").Output()
	if err != nil {
		return "unknown"
	}
	c := string(bytes.TrimSpace(out))
	st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!*.md", ":!bench.json").Output()
	if err != nil || len(bytes.TrimSpace(st)) > 0 {
		c += "-dirty"
	}
	return c
}

func machine(cpu string) Machine {
	m := Machine{CPU: cpu, Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemoryGB = int(math.Round(float64(kb) / (1 << 20)))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}
