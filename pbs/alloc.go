package pbs

import (
	"bufio"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/batch"
)

// ErrNoAllocation is returned by DetectAllocation outside a PBS job.
var ErrNoAllocation = errors.New("pbs: not inside a PBS job (PBS_JOBID unset)")

// StimeLayout is how qstat prints times (local time, no zone).
const StimeLayout = "Mon Jan _2 15:04:05 2006"

// DetectAllocation describes the PBS job the current process runs in, from
// PBS_JOBID, PBS_ARRAY_INDEX, PBS_NODEFILE (one line per chunk/cpu; nodes
// are its distinct lines in order), NCPUS (else OMP_NUM_THREADS) and
// CUDA_VISIBLE_DEVICES, and the walltime end from one
// `qstat -f -F json PBS_JOBID`: stime + Resource_List.walltime, or, without
// stime, now + walltime - resources_used.walltime. If qstat fails or the
// job has no walltime, End is zero and the allocation is still returned
// with a nil error.
func (s *Scheduler) DetectAllocation(ctx context.Context, getenv func(string) string) (*batch.Allocation, error) {
	id := getenv("PBS_JOBID")
	if id == "" {
		return nil, ErrNoAllocation
	}
	a := &batch.Allocation{Scheduler: "pbs", JobID: batch.JobID(id), ArrayIdx: -1}
	if v, err := strconv.Atoi(getenv("PBS_ARRAY_INDEX")); err == nil {
		a.ArrayIdx = v
	}
	if nf := getenv("PBS_NODEFILE"); nf != "" {
		if f, err := os.Open(nf); err == nil {
			seen := map[string]bool{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				h := strings.TrimSpace(sc.Text())
				if h != "" && !seen[h] {
					seen[h] = true
					a.Nodes = append(a.Nodes, h)
				}
			}
			f.Close()
		}
	}
	for _, k := range []string{"NCPUS", "OMP_NUM_THREADS"} {
		if v, err := strconv.Atoi(getenv(k)); err == nil && v > 0 {
			a.CPUs = v
			break
		}
	}
	if v := strings.TrimSpace(getenv("CUDA_VISIBLE_DEVICES")); v != "" && v != "NoDevFiles" {
		a.GPUs = len(strings.Split(v, ","))
	}
	out, _, err := s.cmd.Run(ctx, "qstat", []string{"-f", "-F", "json", id}, nil)
	if err != nil {
		return a, nil
	}
	res, _ := ParseQstat(out)
	j, ok := res.Jobs[id]
	if !ok {
		for k, v := range res.Jobs {
			if shortID(k) == shortID(id) {
				j, ok = v, true
			}
		}
	}
	if !ok {
		return a, nil
	}
	if a.GPUs == 0 && j.NGPUs > 0 {
		a.GPUs = j.NGPUs
	}
	if a.CPUs == 0 && j.NCPUs > 0 {
		a.CPUs = j.NCPUs
	}
	a.End = walltimeEnd(j, s.now(), s.loc)
	return a, nil
}

func walltimeEnd(j Job, now time.Time, loc *time.Location) time.Time {
	limit, err := ParseWalltime(j.Walltime)
	if err != nil || limit <= 0 {
		return time.Time{}
	}
	if t, err := time.ParseInLocation(StimeLayout, j.Stime, loc); err == nil {
		return t.Add(limit)
	}
	used, err := ParseWalltime(j.UsedWalltime)
	if err != nil {
		used = 0
	}
	return now.Add(limit - used)
}
