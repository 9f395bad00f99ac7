package pbs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/scalebox-hpc/scalebox/batch"
)

// submitLine is a qsub job id: 123.server, 124[].server (Torque-style
// ids without a server are accepted too).
var submitLine = regexp.MustCompile(`^[0-9]+(\[\])?(\.[A-Za-z0-9][A-Za-z0-9._-]*)?$`)

// ParseSubmit returns the job id printed by qsub: the last line that looks
// like one (banners and warnings are ignored).
func ParseSubmit(out []byte) (batch.JobID, error) {
	var id string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if submitLine.MatchString(line) {
			id = line
		}
	}
	if id == "" {
		return "", fmt.Errorf("pbs: no job id in qsub output")
	}
	return batch.JobID(id), nil
}

// Job is one job of `qstat -f -F json`, with the attributes Scalebox uses.
type Job struct {
	ID           string
	Name         string
	State        string // job_state, one letter
	Substate     int
	Comment      string
	ExitStatus   *int
	ExecHost     string
	Stime        string
	Walltime     string // Resource_List.walltime
	UsedWalltime string // resources_used.walltime
	NCPUs        int    // Resource_List.ncpus
	NGPUs        int    // Resource_List.ngpus
	Array        bool   // an array parent
	ArrayID      string // of a subjob
	ArrayIndex   int    // of a subjob; -1 otherwise
	ParseError   string // set when the job's JSON could not be decoded; fields come from a salvage scan
}

// QstatResult is a parsed `qstat -f -F json`.
type QstatResult struct {
	Server  string
	Version string
	Jobs    map[string]Job
}

// ParseQstat parses `qstat -f -F json` defensively: invalid escapes and raw
// control characters in strings (real qstat does not escape backslashes
// in Variable_List) are repaired; each job is decoded on its own so that
// one bad job does not hide the others (a bad job keeps what a salvage
// scan finds and sets ParseError); a missing Jobs key is no jobs; a
// "timestamp" of "" is tolerated. The error reports the first problem;
// the result holds every job that could be found.
func ParseQstat(out []byte) (QstatResult, error) {
	res := QstatResult{Jobs: map[string]Job{}}
	data := repairJSON(out)
	var top struct {
		Server  any                        `json:"pbs_server"`
		Version any                        `json:"pbs_version"`
		Jobs    map[string]json.RawMessage `json:"Jobs"`
	}
	var firstErr error
	raw := map[string][]byte{}
	if err := json.Unmarshal(data, &top); err == nil {
		res.Server, res.Version = str(top.Server), str(top.Version)
		for k, v := range top.Jobs {
			raw[k] = v
		}
	} else {
		firstErr = fmt.Errorf("pbs: qstat json: %w", err)
		var perr error
		raw, perr = splitJobs(data)
		if perr != nil && len(raw) == 0 && bytes.Contains(data, []byte(`"Jobs"`)) {
			firstErr = perr
		}
	}
	for id, r := range raw {
		j, err := parseJob(id, r)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		res.Jobs[id] = j
	}
	if len(bytes.TrimSpace(out)) == 0 {
		return res, fmt.Errorf("pbs: empty qstat output")
	}
	return res, firstErr
}

func parseJob(id string, r []byte) (Job, error) {
	j := Job{ID: id, ArrayIndex: -1, Array: strings.Contains(id, "[]")}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r, &m); err != nil {
		j.ParseError = err.Error()
		salvage(&j, r)
		return j, fmt.Errorf("pbs: qstat job %s: %w", id, err)
	}
	var nested = func(key string) map[string]json.RawMessage {
		var n map[string]json.RawMessage
		if v, ok := m[key]; ok {
			_ = json.Unmarshal(v, &n)
		}
		return n
	}
	j.Name = rawStr(m["Job_Name"])
	j.State = rawStr(m["job_state"])
	j.Substate, _ = rawInt(m["substate"])
	j.Comment = rawStr(m["comment"])
	if v, ok := rawInt(m["Exit_status"]); ok {
		j.ExitStatus = &v
	}
	j.ExecHost = rawStr(m["exec_host"])
	j.Stime = rawStr(m["stime"])
	rl, ru := nested("Resource_List"), nested("resources_used")
	j.Walltime = rawStr(rl["walltime"])
	j.UsedWalltime = rawStr(ru["walltime"])
	j.NCPUs, _ = rawInt(rl["ncpus"])
	j.NGPUs, _ = rawInt(rl["ngpus"])
	// an array parent says "array":"True"; its id ends in "[]" either way
	j.Array = strings.EqualFold(rawStr(m["array"]), "true") || strings.Contains(id, "[]")
	j.ArrayID = rawStr(m["array_id"])
	if v, ok := rawInt(m["array_index"]); ok {
		j.ArrayIndex = v
	}
	return j, nil
}

var (
	salvageState = regexp.MustCompile(`"job_state"\s*:\s*"([A-Z])"`)
	salvageExit  = regexp.MustCompile(`"Exit_status"\s*:\s*"?(-?[0-9]{1,9})`)
	salvageSub   = regexp.MustCompile(`"substate"\s*:\s*"?([0-9]{1,5})`)
	salvageCmt   = regexp.MustCompile(`"comment"\s*:\s*"([^"\\]*)"`)
)

// salvage fills what it can of a job whose JSON does not decode.
func salvage(j *Job, r []byte) {
	if m := salvageState.FindSubmatch(r); m != nil {
		j.State = string(m[1])
	}
	if m := salvageExit.FindSubmatch(r); m != nil {
		if v, err := strconv.Atoi(string(m[1])); err == nil {
			j.ExitStatus = &v
		}
	}
	if m := salvageSub.FindSubmatch(r); m != nil {
		j.Substate, _ = strconv.Atoi(string(m[1]))
	}
	if m := salvageCmt.FindSubmatch(r); m != nil {
		j.Comment = string(m[1])
	}
}

func rawStr(r json.RawMessage) string {
	if len(r) == 0 {
		return ""
	}
	var v any
	if json.Unmarshal(r, &v) != nil {
		return ""
	}
	return str(v)
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	return ""
}

func rawInt(r json.RawMessage) (int, bool) {
	s := rawStr(r)
	if s == "" {
		return 0, false
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != f || f > 1<<31 || f < -(1<<31) {
			return 0, false
		}
		return int(f), true
	}
	return v, true
}

// repairJSON makes qstat's JSON decodable: inside strings, a backslash
// not starting a valid escape is doubled and raw control characters are
// escaped. Everything else is left alone.
func repairJSON(in []byte) []byte {
	if !bytes.ContainsAny(in, "\\\t\r\n\x00\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f") {
		return in
	}
	out := make([]byte, 0, len(in)+16)
	inStr := false
	for i := 0; i < len(in); i++ {
		c := in[i]
		if !inStr {
			if c == '"' {
				inStr = true
			}
			out = append(out, c)
			continue
		}
		switch {
		case c == '"':
			inStr = false
			out = append(out, c)
		case c == '\\':
			if i+1 < len(in) && validEscape(in[i+1:]) {
				out = append(out, c, in[i+1])
				i++
			} else {
				out = append(out, '\\', '\\')
			}
		case c < 0x20:
			out = append(out, fmt.Sprintf(`\u%04x`, c)...)
		default:
			out = append(out, c)
		}
	}
	return out
}

func validEscape(b []byte) bool {
	switch b[0] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return true
	case 'u':
		if len(b) < 5 {
			return false
		}
		for _, c := range b[1:5] {
			if !strings.ContainsRune("0123456789abcdefABCDEF", rune(c)) {
				return false
			}
		}
		return true
	}
	return false
}

// splitJobs finds the members of the "Jobs" object by scanning (strings
// and nesting aware) when the whole document does not decode; a
// truncated last member is kept as it is.
func splitJobs(data []byte) (map[string][]byte, error) {
	jobs := map[string][]byte{}
	k := bytes.Index(data, []byte(`"Jobs"`))
	if k < 0 {
		return jobs, nil
	}
	i := k + len(`"Jobs"`)
	skip := func() {
		for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r' || data[i] == ',') {
			i++
		}
	}
	skip()
	if i >= len(data) || data[i] != ':' {
		return jobs, fmt.Errorf("pbs: qstat json: no ':' after \"Jobs\"")
	}
	i++
	skip()
	if i >= len(data) || data[i] != '{' {
		return jobs, fmt.Errorf("pbs: qstat json: \"Jobs\" is not an object")
	}
	i++
	for {
		skip()
		if i >= len(data) || data[i] == '}' {
			return jobs, nil
		}
		if data[i] != '"' {
			return jobs, fmt.Errorf("pbs: qstat json: unexpected %q at offset %d", data[i], i)
		}
		end := endOfString(data, i)
		var key string
		if json.Unmarshal(data[i:end], &key) != nil {
			key = strings.Trim(string(data[i:end]), `"`)
		}
		i = end
		skip()
		if i >= len(data) || data[i] != ':' {
			return jobs, fmt.Errorf("pbs: qstat json: no value for job %q", key)
		}
		i++
		skip()
		start := i
		depth := 0
	value:
		for i < len(data) {
			switch data[i] {
			case '"':
				i = endOfString(data, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth <= 0 {
					i++
					break value
				}
			case ',':
				if depth == 0 {
					break value
				}
			}
			i++
		}
		if depth < 0 { // the value was empty and we consumed the closing brace of Jobs
			return jobs, nil
		}
		jobs[key] = data[start:i]
	}
}

// endOfString returns the offset just past the string starting at data[i] == '"'.
func endOfString(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(data)
}

var (
	unknownJob  = regexp.MustCompile(`^qstat: Unknown Job Id (\S+)`)
	finishedJob = regexp.MustCompile(`^qstat: (\S+) Job has finished`)
)

// ParseQstatErrors returns the ids qstat reported on stderr as unknown
// ("qstat: Unknown Job Id X", rc 153) or finished without -x ("qstat: X
// Job has finished, use -x or -H ...", rc 35), with the message.
func ParseQstatErrors(stderr []byte) map[string]string {
	gone := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := unknownJob.FindStringSubmatch(line); m != nil {
			gone[m[1]] = line
		} else if m := finishedJob.FindStringSubmatch(line); m != nil {
			gone[m[1]] = line
		}
	}
	return gone
}

// shortID is the server-independent part of a job id ("124[3]" of
// "124[3].server").
func shortID(id string) string {
	if i := strings.IndexByte(id, '.'); i >= 0 {
		return id[:i]
	}
	return id
}

// matchStatus maps parsed jobs to statuses: asked ids are keyed as asked
// (matching "123" to "123.server"), missing ones are Unknown, other jobs
// (subjobs) are keyed by their own ids.
func matchStatus(ids []batch.JobID, jobs map[string]Job, gone map[string]string) map[batch.JobID]batch.JobStatus {
	out := make(map[batch.JobID]batch.JobStatus, len(jobs)+len(ids))
	byShort := make(map[string]string, len(jobs))
	for id := range jobs {
		byShort[shortID(id)] = id
	}
	used := map[string]bool{}
	for _, want := range ids {
		full := string(want)
		j, ok := jobs[full]
		if !ok {
			if f, ok2 := byShort[shortID(full)]; ok2 {
				j, ok, full = jobs[f], true, f
			}
		}
		if !ok {
			reason := gone[string(want)]
			if reason == "" {
				for g, msg := range gone {
					if shortID(g) == shortID(string(want)) {
						reason = msg
					}
				}
			}
			if reason == "" {
				reason = "not reported by qstat"
			}
			out[want] = batch.JobStatus{ID: want, State: batch.Unknown, Reason: reason}
			continue
		}
		used[full] = true
		st := StatusOf(j)
		st.ID = want
		out[want] = st
	}
	for id, j := range jobs {
		if used[id] {
			continue
		}
		if _, dup := out[batch.JobID(id)]; dup {
			continue
		}
		out[batch.JobID(id)] = StatusOf(j)
	}
	return out
}

// Native job states (qstat.1B) and what they mean for Scalebox. F and X
// are final and resolved by Exit_status (see finalState).
var stateTable = map[string]batch.State{
	"Q": batch.Pending, // queued
	"H": batch.Pending, // held
	"W": batch.Pending, // waiting for its execution time
	"T": batch.Pending, // being moved to a new location
	"R": batch.Running, // running
	"E": batch.Running, // exiting after having run
	"B": batch.Running, // array job: at least one subjob has started
	"S": batch.Running, // suspended
	"U": batch.Running, // suspended because the workstation became busy
	"M": batch.Unknown, // moved to another server: no longer ours to watch
	"F": batch.Completed,
	"X": batch.Completed,
}

// StatusOf maps a qstat job to a batch.JobStatus through the state table;
// F (finished) and X (finished subjob) go by Exit_status: 0 Completed
// (except an array parent whose substate 93 says a subjob failed: PBS
// leaves its Exit_status at 0), -29 Timeout (walltime), >= 256 Cancelled
// (killed by a signal: qdel of a running job gives 256+SIGTERM = 271),
// other values Failed, none Cancelled (deleted before it ran).
func StatusOf(j Job) batch.JobStatus {
	st := batch.JobStatus{ID: batch.JobID(j.ID), Native: j.State, Reason: j.Comment, ExitCode: j.ExitStatus}
	if j.ParseError != "" {
		st.Reason = strings.TrimSpace(j.Comment + " (unparsable qstat entry: " + j.ParseError + ")")
	}
	s, ok := stateTable[j.State]
	if !ok {
		st.State = batch.Unknown
		if st.Reason == "" {
			st.Reason = fmt.Sprintf("unknown PBS state %q", j.State)
		}
		return st
	}
	st.State = s
	if j.State == "F" || j.State == "X" {
		st.State = finalState(j)
	}
	if j.ExecHost != "" && (st.State == batch.Running || st.State.Final()) {
		h := j.ExecHost
		if i := strings.IndexAny(h, "/+"); i >= 0 {
			h = h[:i]
		}
		st.Node = h
	}
	return st
}

func finalState(j Job) batch.State {
	if j.ExitStatus == nil {
		return batch.Cancelled
	}
	switch e := *j.ExitStatus; {
	case e == 0:
		if j.Array && j.Substate == 93 {
			return batch.Failed
		}
		return batch.Completed
	case e == -29:
		return batch.Timeout
	case e >= 256:
		return batch.Cancelled
	default:
		return batch.Failed
	}
}
