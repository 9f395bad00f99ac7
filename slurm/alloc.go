package slurm

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

// DetectAllocation reports the Slurm job the current process runs in, from
// its SLURM_* environment (read through getenv, e.g. os.Getenv): the job id
// ("123", or "123_4" for an array task, with ArrayIdx 4), the nodes
// (SLURM_JOB_NODELIST, expanded), CPUs on this node and GPUs. ok is false
// outside a Slurm job.
//
// With cmd non-nil, the walltime end comes from one
// `squeue -h -t all -j ID -o %e|%l` call (zero End for an UNLIMITED job). If
// that call fails, the allocation is still returned, with ok true, a zero
// End and the error.
func DetectAllocation(getenv func(string) string, cmd batch.Commander) (*batch.Allocation, bool, error) {
	return detectAllocation(context.Background(), getenv, cmd, time.Local)
}

// DetectAllocationContext is DetectAllocation with a context and the time
// zone in which squeue prints times.
func DetectAllocationContext(ctx context.Context, getenv func(string) string, cmd batch.Commander, loc *time.Location) (*batch.Allocation, bool, error) {
	return detectAllocation(ctx, getenv, cmd, loc)
}

func detectAllocation(ctx context.Context, getenv func(string) string, cmd batch.Commander, loc *time.Location) (*batch.Allocation, bool, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := strings.TrimSpace(getenv(n)); v != "" {
				return v
			}
		}
		return ""
	}
	raw := env("SLURM_JOB_ID", "SLURM_JOBID")
	if raw == "" || !isDigits(raw) {
		return nil, false, nil
	}
	a := &batch.Allocation{Scheduler: "slurm", JobID: batch.JobID(raw), ArrayIdx: -1}
	if m, t := env("SLURM_ARRAY_JOB_ID"), env("SLURM_ARRAY_TASK_ID"); isDigits(m) && isDigits(t) {
		if n, err := atoiDigits(t); err == nil {
			a.JobID, a.ArrayIdx = batch.JobID(m+"_"+t), n
		}
	}
	var errs []error
	if nl := env("SLURM_JOB_NODELIST", "SLURM_NODELIST"); nl != "" {
		nodes, err := ExpandHostlist(nl)
		if err != nil {
			errs = append(errs, err)
		}
		a.Nodes = nodes
	}
	a.CPUs = firstInt(env("SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE"))
	a.GPUs = countGPUs(env)

	if cmd != nil {
		out, _, err := cmd.Run(ctx, "squeue", []string{"-h", "-t", "all", "-j", raw, "-o", "%e|%l"}, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("slurm: end time of job %s: %w", raw, err))
		} else if end, err := ParseEndTime(out, loc); err != nil {
			errs = append(errs, err)
		} else {
			a.End = end
		}
	}
	if len(errs) > 0 {
		return a, true, errs[0]
	}
	return a, true, nil
}

// ParseEndTime reads `squeue -o %e|%l` for one job: the end time in loc,
// zero when the job has no limit (UNLIMITED) or no end time yet.
func ParseEndTime(out []byte, loc *time.Location) (time.Time, error) {
	line := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(line, '\n'); i >= 0 { // banners before
		line = strings.TrimSpace(line[i+1:])
	}
	end, limit, _ := strings.Cut(line, "|")
	end, limit = strings.TrimSpace(end), strings.TrimSpace(limit)
	switch {
	case line == "":
		return time.Time{}, fmt.Errorf("slurm: no end time in squeue output")
	case strings.EqualFold(limit, "UNLIMITED") || strings.EqualFold(limit, "INFINITE"):
		return time.Time{}, nil
	case end == "N/A" || end == "NONE" || end == "Unknown" || end == "":
		return time.Time{}, nil
	}
	if loc == nil {
		loc = time.Local
	}
	t, err := time.ParseInLocation("2006-01-02T15:04:05", end, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("slurm: bad end time %q", truncate(end, 50))
	}
	return t, nil
}

// firstInt reads "8", or the first count of SLURM_JOB_CPUS_PER_NODE's
// "4(x2),2".
func firstInt(s string) int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, err := atoiDigits(s[:i])
	if err != nil {
		return 0
	}
	return n
}

// countGPUs reads the GPUs of this node: SLURM_GPUS_ON_NODE, else
// SLURM_GPUS_PER_NODE / SLURM_GPUS ("2" or "a100:2"), else the length of the
// SLURM_JOB_GPUS / GPU_DEVICE_ORDINAL index list.
func countGPUs(env func(...string) string) int {
	if n := firstInt(env("SLURM_GPUS_ON_NODE")); n > 0 {
		return n
	}
	for _, v := range []string{env("SLURM_GPUS_PER_NODE"), env("SLURM_GPUS")} {
		if v == "" {
			continue
		}
		if i := strings.LastIndexByte(v, ':'); i >= 0 {
			v = v[i+1:]
		}
		if n := firstInt(v); n > 0 {
			return n
		}
	}
	if v := env("SLURM_JOB_GPUS", "GPU_DEVICE_ORDINAL"); v != "" {
		return len(strings.Split(v, ","))
	}
	return 0
}

// maxHosts bounds a hostlist's expansion.
const maxHosts = 1 << 16

// ExpandHostlist expands a Slurm hostlist: "n[01-03,7],gpu1,r[1-2]-c[1-2]"
// → n01 n02 n03 n7 gpu1 r1-c1 r1-c2 r2-c1 r2-c2 (zero padding kept).
func ExpandHostlist(s string) ([]string, error) {
	var out []string
	for _, item := range splitTop(s) {
		if item == "" {
			continue
		}
		hosts, err := expandOne(item, maxHosts-len(out))
		if err != nil {
			return out, fmt.Errorf("slurm: hostlist %q: %w", truncate(s, 100), err)
		}
		out = append(out, hosts...)
	}
	return out, nil
}

// splitTop splits at commas outside brackets.
func splitTop(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			if depth > 0 {
				depth--
			}
		case ',':
			if depth == 0 {
				parts = append(parts, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(parts, strings.TrimSpace(s[start:]))
}

func expandOne(item string, limit int) ([]string, error) {
	open := strings.IndexByte(item, '[')
	if open < 0 {
		if strings.IndexByte(item, ']') >= 0 {
			return nil, fmt.Errorf("unbalanced ]")
		}
		return []string{item}, nil
	}
	closing := strings.IndexByte(item[open:], ']')
	if closing < 0 {
		return nil, fmt.Errorf("unbalanced [")
	}
	closing += open
	prefix, body, suffix := item[:open], item[open+1:closing], item[closing+1:]
	rests, err := expandOne(suffix, limit)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, part := range strings.Split(body, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := atoiDigits(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = atoiDigits(hi); err != nil {
				return nil, err
			}
		}
		if b < a {
			return nil, fmt.Errorf("range %s backwards", part)
		}
		for n := a; n <= b; n++ {
			num := strconv.Itoa(n)
			if len(num) < len(lo) {
				num = strings.Repeat("0", len(lo)-len(num)) + num
			}
			for _, r := range rests {
				if len(out) >= limit {
					return nil, fmt.Errorf("more than %d hosts", maxHosts)
				}
				out = append(out, prefix+num+r)
			}
		}
	}
	return out, nil
}
