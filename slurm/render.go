package slurm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

// maxSignalSeconds is the largest --signal=…@N Slurm accepts (a uint16).
const maxSignalSeconds = 65535

// Render writes the sbatch script of spec: a shebang, one #SBATCH directive
// per set JobSpec field, the environment as exports and the command, run
// with exec so that the --signal=B:USR1 sent to the batch shell reaches it.
//
// Every value is quoted: directive values with sbatch's own quoting (which
// sbatch undoes when it reads #SBATCH lines), environment values and command
// words with POSIX single quotes. Values that cannot be written safely (a
// newline or NUL in a directive, a bad environment variable name) are an
// error, never a broken or injectable script.
func (s *Scheduler) Render(w io.Writer, spec *batch.JobSpec) error {
	if spec == nil {
		return errors.New("slurm: nil job spec")
	}
	if len(spec.Command) == 0 {
		return errors.New("slurm: job spec has no command")
	}
	var d directives
	d.str("job-name", spec.Name)
	d.str("partition", spec.Queue)
	d.str("account", spec.Account)
	d.str("qos", spec.QOS)
	if spec.Walltime < 0 {
		return fmt.Errorf("slurm: negative walltime %v", spec.Walltime)
	}
	if spec.Walltime > 0 {
		d.raw("time", FormatTime(spec.Walltime))
	}
	d.count("nodes", spec.Nodes)
	d.count("ntasks-per-node", spec.TasksPerNode)
	d.count("cpus-per-task", spec.CoresPerTask)
	if spec.MemoryMB < 0 {
		d.err = fmt.Errorf("slurm: negative memory %d MB", spec.MemoryMB)
	} else if spec.MemoryMB > 0 {
		d.raw("mem", strconv.FormatInt(spec.MemoryMB, 10)+"M")
	}
	if spec.GPUs < 0 {
		d.err = fmt.Errorf("slurm: negative GPU count %d", spec.GPUs)
	} else if spec.GPUs > 0 {
		d.raw("gres", "gpu:"+strconv.Itoa(spec.GPUs))
	}
	if spec.ArraySize < 0 {
		d.err = fmt.Errorf("slurm: negative array size %d", spec.ArraySize)
	} else if spec.ArraySize > 1 {
		d.raw("array", "0-"+strconv.Itoa(spec.ArraySize-1))
	}
	d.str("output", spec.Output)
	d.str("error", spec.Error)
	if spec.SignalMargin < 0 {
		d.err = fmt.Errorf("slurm: negative signal margin %v", spec.SignalMargin)
	} else if spec.SignalMargin > 0 {
		secs := ceilSeconds(spec.SignalMargin)
		if secs > maxSignalSeconds {
			d.err = fmt.Errorf("slurm: signal margin %v above Slurm's %d s", spec.SignalMargin, maxSignalSeconds)
		}
		d.raw("signal", "B:USR1@"+strconv.FormatInt(secs, 10))
	}
	if spec.Exclusive {
		d.lines = append(d.lines, "#SBATCH --exclusive")
	}
	d.str("constraint", spec.Constraint)
	if len(spec.ExcludeHosts) > 0 {
		d.str("exclude", strings.Join(spec.ExcludeHosts, ","))
	}
	d.str("chdir", spec.WorkDir)
	for _, x := range spec.Extra {
		x = strings.TrimSpace(x)
		if x == "" {
			continue
		}
		if strings.ContainsAny(x, "\n\r\x00") {
			d.err = fmt.Errorf("slurm: extra directive %q has a line break or NUL", x)
			continue
		}
		d.lines = append(d.lines, "#SBATCH "+x)
	}
	if d.err != nil {
		return d.err
	}

	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "#!%s\n", s.shell)
	for _, l := range d.lines {
		bw.WriteString(l)
		bw.WriteByte('\n')
	}
	bw.WriteString("# Scalebox pilot job, written by scalebox (slurm).\n")
	if len(spec.Env) > 0 {
		keys := make([]string, 0, len(spec.Env))
		for k := range spec.Env {
			if !batch.IsEnvName(k) {
				return fmt.Errorf("slurm: bad environment variable name %q", k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(bw, "export %s=%s\n", k, batch.ShellQuote(spec.Env[k]))
		}
	}
	words := make([]string, len(spec.Command))
	for i, c := range spec.Command {
		words[i] = batch.ShellQuote(c)
	}
	fmt.Fprintf(bw, "exec %s\n", strings.Join(words, " "))
	return bw.Flush()
}

// directives collects #SBATCH lines and the first error.
type directives struct {
	lines []string
	err   error
}

func (d *directives) raw(name, value string) {
	d.lines = append(d.lines, "#SBATCH --"+name+"="+value)
}

func (d *directives) str(name, value string) {
	if value == "" {
		return
	}
	q, err := quoteDirective(value)
	if err != nil {
		if d.err == nil {
			d.err = fmt.Errorf("slurm: --%s: %w", name, err)
		}
		return
	}
	d.raw(name, q)
}

func (d *directives) count(name string, n int) {
	if n < 0 && d.err == nil {
		d.err = fmt.Errorf("slurm: negative --%s %d", name, n)
	}
	if n > 0 {
		d.raw(name, strconv.Itoa(n))
	}
}

// FormatTime formats a walltime as Slurm's D-HH:MM:SS, rounding up to the
// second.
func FormatTime(d time.Duration) string {
	s := ceilSeconds(d)
	return fmt.Sprintf("%d-%02d:%02d:%02d", s/86400, s/3600%24, s/60%60, s%60)
}

func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// quoteDirective quotes a #SBATCH value the way sbatch reads it: a
// backslash escapes the next character, quotes group, an unquoted # starts a
// comment, whitespace ends the value. Safe values are left as they are.
func quoteDirective(v string) (string, error) {
	if strings.ContainsAny(v, "\n\r\x00") {
		return "", fmt.Errorf("value %q has a line break or NUL", v)
	}
	if isSafe(v, "@%+=:,./-_") {
		return v, nil
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String(), nil
}

func isSafe(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0 {
			continue
		}
		return false
	}
	return true
}
