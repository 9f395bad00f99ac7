package pbs

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

// Render implements batch.Scheduler: a bash script with #PBS directives,
// exports and the command (every word shell-quoted, exec'd so that PBS's
// SIGTERM reaches it).
//
// The select chunk is `select=Nodes:ncpus=TasksPerNode*CoresPerTask`
// plus mpiprocs (TasksPerNode > 1), mem (MB, per node as for Slurm's
// --mem), ngpus and Constraint (appended verbatim, e.g. "model=skylake").
// Multi-node jobs use place=scatter (":excl" when Exclusive). PBS has no
// QOS and no signal before the walltime: those are written as comments;
// the pilot learns its deadline from DetectAllocation.
func (s *Scheduler) Render(w io.Writer, spec *batch.JobSpec) error {
	if spec == nil {
		return fmt.Errorf("pbs: nil job spec")
	}
	if len(spec.Command) == 0 {
		return fmt.Errorf("pbs: job spec has no command")
	}
	for _, f := range []struct{ what, v string }{
		{"name", spec.Name}, {"queue", spec.Queue}, {"account", spec.Account}, {"qos", spec.QOS},
		{"output", spec.Output}, {"error", spec.Error}, {"constraint", spec.Constraint},
	} {
		if strings.ContainsAny(f.v, "\n\r") {
			return fmt.Errorf("pbs: %s %q contains a newline", f.what, f.v)
		}
	}
	for _, f := range []string{spec.Name, spec.Queue, spec.Account, spec.Output, spec.Error, spec.Constraint} {
		if strings.ContainsAny(f, " \t") {
			return fmt.Errorf("pbs: %q contains white space, which #PBS directives cannot hold", f)
		}
	}
	for _, x := range spec.Extra {
		if strings.ContainsAny(x, "\n\r") {
			return fmt.Errorf("pbs: extra directive %q contains a newline", x)
		}
	}
	if spec.Walltime < 0 || spec.Nodes < 0 || spec.TasksPerNode < 0 || spec.CoresPerTask < 0 || spec.MemoryMB < 0 || spec.GPUs < 0 || spec.ArraySize < 0 {
		return fmt.Errorf("pbs: negative size in job spec")
	}

	b := bufio.NewWriter(w)
	fmt.Fprintf(b, "#!%s\n", s.shell)
	d := func(format string, a ...any) { fmt.Fprintf(b, "#PBS "+format+"\n", a...) }
	if spec.Name != "" {
		d("-N %s", spec.Name)
	}
	if spec.Queue != "" {
		d("-q %s", spec.Queue)
	}
	if spec.Account != "" {
		d("-A %s", spec.Account)
	}
	nodes := max(spec.Nodes, 1)
	tasks := max(spec.TasksPerNode, 1)
	ncpus := tasks * max(spec.CoresPerTask, 1)
	sel := fmt.Sprintf("select=%d:ncpus=%d", nodes, ncpus)
	if spec.TasksPerNode > 1 {
		sel += fmt.Sprintf(":mpiprocs=%d", spec.TasksPerNode)
	}
	if spec.MemoryMB > 0 {
		sel += fmt.Sprintf(":mem=%dmb", spec.MemoryMB)
	}
	if spec.GPUs > 0 {
		sel += fmt.Sprintf(":ngpus=%d", spec.GPUs)
	}
	if spec.Constraint != "" {
		sel += ":" + spec.Constraint
	}
	d("-l %s", sel)
	switch {
	case nodes > 1 && spec.Exclusive:
		d("-l place=scatter:excl")
	case nodes > 1:
		d("-l place=scatter")
	case spec.Exclusive:
		d("-l place=excl")
	}
	if spec.Walltime > 0 {
		d("-l walltime=%s", FormatWalltime(spec.Walltime))
	}
	if spec.ArraySize > 1 {
		d("-J 0-%d", spec.ArraySize-1)
	}
	switch {
	case spec.Output != "" && (spec.Error == "" || spec.Error == spec.Output):
		d("-j oe")
		d("-o %s", spec.Output)
	default:
		if spec.Output != "" {
			d("-o %s", spec.Output)
		}
		if spec.Error != "" {
			d("-e %s", spec.Error)
		}
	}
	for _, x := range spec.Extra {
		d("%s", strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(x), "#PBS")))
	}
	if spec.QOS != "" {
		fmt.Fprintf(b, "# qos %s: PBS has no QOS, ignored\n", batch.ShellQuote(spec.QOS))
	}
	if spec.SignalMargin > 0 {
		fmt.Fprintf(b, "# signal margin %s: PBS sends no signal before the walltime; the pilot drains from the walltime end it reads with qstat\n", spec.SignalMargin)
	}
	b.WriteString("\n")
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		if !batch.IsEnvName(k) {
			return fmt.Errorf("pbs: invalid environment variable name %q", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "export %s=%s\n", k, batch.ShellQuote(spec.Env[k]))
	}
	if spec.WorkDir != "" {
		fmt.Fprintf(b, "cd %s || exit 1\n", batch.ShellQuote(spec.WorkDir))
	} else {
		b.WriteString("cd \"${PBS_O_WORKDIR:-.}\" || exit 1\n")
	}
	words := make([]string, len(spec.Command))
	for i, c := range spec.Command {
		words[i] = batch.ShellQuote(c)
	}
	fmt.Fprintf(b, "exec %s\n", strings.Join(words, " "))
	return b.Flush()
}

// FormatWalltime renders d as PBS's HH:MM:SS (hours may exceed 99),
// rounding up to the second.
func FormatWalltime(d time.Duration) string {
	sec := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}

// ParseWalltime parses PBS durations: [[HH:]MM:]SS[.ms] or plain seconds.
func ParseWalltime(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty walltime")
	}
	parts := strings.Split(s, ":")
	if len(parts) > 3 {
		return 0, fmt.Errorf("bad walltime %q", s)
	}
	var secs float64
	for i, p := range parts {
		last := i == len(parts)-1
		if p == "" || len(p) > 12 {
			return 0, fmt.Errorf("bad walltime %q", s)
		}
		for _, c := range p {
			if (c < '0' || c > '9') && !(last && c == '.') {
				return 0, fmt.Errorf("bad walltime %q", s)
			}
		}
		v, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return 0, fmt.Errorf("bad walltime %q", s)
		}
		secs = secs*60 + v
	}
	if secs > 1e10 {
		return 0, fmt.Errorf("bad walltime %q", s)
	}
	return time.Duration(secs * float64(time.Second)), nil
}
