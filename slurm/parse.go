package slurm

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/scalebox-hpc/scalebox/batch"
)

// stateTable maps Slurm's native job states (long names as squeue %T/State
// and sacct print them, and squeue's compact codes) to batch states.
var stateTable = map[string]batch.State{
	"PENDING": batch.Pending, "PD": batch.Pending,
	"CONFIGURING": batch.Pending, "CF": batch.Pending, // allocated, nodes booting: not started yet
	"REQUEUED": batch.Pending, "RQ": batch.Pending,
	"REQUEUE_HOLD": batch.Pending, "RH": batch.Pending,
	"REQUEUE_FED": batch.Pending, "RF": batch.Pending,
	"RESV_DEL_HOLD": batch.Pending, "RD": batch.Pending,
	"SPECIAL_EXIT": batch.Pending, "SE": batch.Pending, // requeued and held
	"RUNNING": batch.Running, "R": batch.Running,
	"COMPLETING": batch.Running, "CG": batch.Running,
	"SUSPENDED": batch.Running, "S": batch.Running,
	"STOPPED": batch.Running, "ST": batch.Running,
	"SIGNALING": batch.Running, "SI": batch.Running,
	"STAGE_OUT": batch.Running, "SO": batch.Running,
	"RESIZING": batch.Running, "RS": batch.Running,
	"COMPLETED": batch.Completed, "CD": batch.Completed,
	"FAILED": batch.Failed, "F": batch.Failed,
	"NODE_FAIL": batch.Failed, "NF": batch.Failed,
	"BOOT_FAIL": batch.Failed, "BF": batch.Failed,
	"OUT_OF_MEMORY": batch.Failed, "OOM": batch.Failed,
	"CANCELLED": batch.Cancelled, "CA": batch.Cancelled,
	"PREEMPTED": batch.Cancelled, "PR": batch.Cancelled, // ended by the scheduler, not by the job
	"REVOKED": batch.Cancelled, "RV": batch.Cancelled, // federation: ran on a sibling cluster
	"TIMEOUT": batch.Timeout, "TO": batch.Timeout,
	"DEADLINE": batch.Timeout, "DL": batch.Timeout,
}

// MapState maps a native Slurm state ("RUNNING", "CANCELLED by 0", "CD") to
// a batch state; a state it does not know is Unknown.
func MapState(native string) batch.State {
	f := strings.Fields(native)
	if len(f) == 0 {
		return batch.Unknown
	}
	// sacct appends "by UID" to CANCELLED; squeue may append "+" flags.
	st := strings.ToUpper(strings.TrimRight(f[0], "+"))
	if s, ok := stateTable[st]; ok {
		return s
	}
	return batch.Unknown
}

// sbatchID matches sbatch --parsable's answer: "id" or "id;cluster";
// sbatchPlain sbatch's answer without --parsable.
var (
	sbatchID    = regexp.MustCompile(`^([0-9]+)(?:;([^\s;]+))?$`)
	sbatchPlain = regexp.MustCompile(`^Submitted batch job ([0-9]+)(?: on cluster (\S+))?$`)
)

// ParseSbatch reads the job id from sbatch --parsable's output: the last
// line that is "id" or "id;cluster" (banners and warnings around it are
// ignored). The cluster, if any, is returned apart.
func ParseSbatch(out []byte) (id batch.JobID, cluster string, err error) {
	lines := strings.Split(string(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		m := sbatchID.FindStringSubmatch(l)
		if m == nil {
			m = sbatchPlain.FindStringSubmatch(l)
		}
		if m != nil {
			return batch.JobID(m[1]), m[2], nil
		}
	}
	return "", "", fmt.Errorf("slurm: no job id in sbatch output %q", truncate(string(out), 200))
}

// record is one job, array task or range of pending array tasks, as squeue
// or sacct report it.
type record struct {
	Key        string // as printed: "123", "123_4", "123_[5-9%2]"
	RawID      string // squeue %A: the job's own id ("" from sacct)
	ArrayJob   string // array master id; "" if not an array
	Task       int    // array task index; -1 for a range or a non-array job
	Ranges     []taskRange
	Native     string
	ExitCode   *int
	Node       string
	Reason     string
	rangeTotal int
}

type taskRange struct{ lo, hi, step int }

// squeueFields is the fixed machine format of Status' one squeue call:
// every field ends in "|", no padding, no truncation; the reason, the only
// free-form field, comes last.
const squeueFields = "JobArrayID:|,JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,exit_code:|,NodeList:|,Reason:|"

// ParseSqueue parses the output of `squeue -h -O` with squeueFields. Lines
// that do not have the expected shape are skipped (and counted), so that
// one odd job never hides the others.
func ParseSqueue(out []byte) (recs []record, skipped int) {
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.SplitN(line, "|", 8)
		if len(f) != 8 {
			skipped++
			continue
		}
		for i := range f[:7] {
			f[i] = strings.TrimSpace(f[i])
		}
		r := record{Key: f[0], RawID: f[1], Native: f[4], Node: f[6], Task: -1}
		if !validID(r.Key) || !isDigits(r.RawID) || r.Native == "" {
			skipped++
			continue
		}
		r.Reason = cleanReason(strings.TrimSuffix(strings.TrimRight(f[7], "\r"), "|"))
		if f[3] != "" && f[3] != "N/A" { // an array task or a range of them
			r.ArrayJob = f[2]
			if !isDigits(r.ArrayJob) || !r.setTasks(f[3]) {
				skipped++
				continue
			}
		}
		if r.Node == "(null)" || r.Node == "N/A" {
			r.Node = ""
		}
		if MapState(r.Native).Final() {
			r.ExitCode = parseExitCode(f[5])
		}
		recs = append(recs, r)
	}
	return recs, skipped
}

// ParseSacct parses `sacct -X --parsable2 --noheader -o
// JobID,State,ExitCode,Reason`. Lines of another shape are skipped.
func ParseSacct(out []byte) (recs []record, skipped int) {
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.SplitN(line, "|", 4)
		if len(f) < 3 {
			skipped++
			continue
		}
		r := record{Key: strings.TrimSpace(f[0]), Native: strings.TrimSpace(f[1]), Task: -1}
		if !validID(r.Key) || r.Native == "" || strings.Contains(r.Key, ".") {
			skipped++
			continue
		}
		if len(f) == 4 {
			r.Reason = cleanReason(f[3])
		}
		if master, tasks, ok := strings.Cut(r.Key, "_"); ok {
			r.ArrayJob = master
			if !r.setTasks(strings.TrimSuffix(strings.TrimPrefix(tasks, "["), "]")) {
				skipped++
				continue
			}
		}
		if MapState(r.Native).Final() {
			r.ExitCode = parseExitCode(f[2])
		}
		recs = append(recs, r)
	}
	return recs, skipped
}

// validID accepts "123", "123_4" and "123_[…]" (squeue/sacct job ids),
// optionally followed by "+N" (heterogeneous job components).
func validID(s string) bool {
	master, rest, isArray := strings.Cut(s, "_")
	master, _, _ = strings.Cut(master, "+")
	if !isDigits(master) {
		return false
	}
	if !isArray {
		return true
	}
	return isDigits(rest) || (len(rest) > 2 && rest[0] == '[' && rest[len(rest)-1] == ']')
}

// maxTasks bounds the array tasks one range may stand for.
const maxTasks = 1 << 20

// setTasks parses squeue's ArrayTaskID / sacct's task part: "4", or a pending
// range "5-9", "1,3,5-7", "0-15:2", "2-11%2" (throttle ignored).
func (r *record) setTasks(s string) bool {
	s, _, _ = strings.Cut(s, "%")
	if isDigits(s) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return false
		}
		r.Task = n
		return true
	}
	total := 0
	for _, part := range strings.Split(s, ",") {
		tr := taskRange{step: 1}
		spec, step, hasStep := strings.Cut(part, ":")
		if hasStep {
			n, err := strconv.Atoi(step)
			if err != nil || n <= 0 {
				return false
			}
			tr.step = n
		}
		lo, hi, isRange := strings.Cut(spec, "-")
		var err1, err2 error
		tr.lo, err1 = atoiDigits(lo)
		tr.hi = tr.lo
		if isRange {
			tr.hi, err2 = atoiDigits(hi)
		}
		if err1 != nil || err2 != nil || tr.hi < tr.lo {
			return false
		}
		total += (tr.hi-tr.lo)/tr.step + 1
		if total > maxTasks || total < 0 {
			return false
		}
		r.Ranges = append(r.Ranges, tr)
	}
	r.rangeTotal = total
	return len(r.Ranges) > 0
}

// has reports whether the record stands for array task i.
func (r *record) has(i int) bool {
	if r.Task >= 0 {
		return r.Task == i
	}
	for _, tr := range r.Ranges {
		if i >= tr.lo && i <= tr.hi && (i-tr.lo)%tr.step == 0 {
			return true
		}
	}
	return false
}

// tasks lists the task indexes of the record, at most limit of them.
func (r *record) tasks(limit int) []int {
	if r.Task >= 0 {
		return []int{r.Task}
	}
	var out []int
	for _, tr := range r.Ranges {
		for i := tr.lo; i <= tr.hi && len(out) < limit; i += tr.step {
			out = append(out, i)
		}
	}
	return out
}

// parseExitCode reads squeue's exit_code (the raw wait status in 22.05:
// exit 3 → 768, killed by signal 9 → 9) or sacct's "code:signal". A job
// killed by a signal gets 128+signal, as a shell reports it.
func parseExitCode(s string) *int {
	s = strings.TrimSpace(s)
	if code, sig, ok := strings.Cut(s, ":"); ok {
		c, err1 := atoiDigits(code)
		g, err2 := atoiDigits(sig)
		if err1 != nil || err2 != nil {
			return nil
		}
		if c == 0 && g != 0 {
			c = 128 + g
		}
		return &c
	}
	w, err := atoiDigits(s)
	if err != nil {
		return nil
	}
	var c int
	if sig := w & 0x7f; sig != 0 {
		c = 128 + sig
	} else {
		c = (w >> 8) & 0xff
	}
	return &c
}

func cleanReason(s string) string {
	s = strings.TrimSpace(s)
	switch s {
	case "None", "(null)", "N/A":
		return ""
	}
	return s
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func atoiDigits(s string) (int, error) {
	if !isDigits(s) || len(s) > 9 {
		return 0, fmt.Errorf("not a small number: %q", s)
	}
	return strconv.Atoi(s)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
