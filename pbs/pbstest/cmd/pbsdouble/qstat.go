package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const usage = `usage: 
qstat [-f] [-J] [-p] [-t] [-x] [-E] [-F format | -w] [-D delim] [ job_identifier... | destination... ]
qstat [-a|-i|-r|-H|-T] [-J] [-t] [-u user] [-n] [-s] [-G|-M] [-1] [-w]
	[ job_identifier... | destination... ]
qstat -Q [-f] [-F format] [-D delim] [ destination... ]
qstat -q [-G|-M] [ destination... ]
qstat -B [-f] [-F format] [-D delim] [ server_name... ]
qstat --version
`

func qstat(st *state, args []string) int {
	var full, hist, subjobs, arrays bool
	format := ""
	var ids []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--version" {
			fmt.Println("pbs_version = 23.06.06")
			return 0
		}
		if !strings.HasPrefix(a, "-") {
			ids = append(ids, a)
			continue
		}
		for k := 1; k < len(a); k++ {
			switch a[k] {
			case 'f':
				full = true
			case 'x', 'H':
				hist = true
			case 't':
				subjobs = true
			case 'J':
				arrays = true
			case 'w', 'a', 'n', 's', '1', 'E', 'p':
			case 'F':
				if k+1 < len(a) {
					format = a[k+1:]
				} else if i+1 < len(args) {
					i++
					format = args[i]
				}
				k = len(a)
			default:
				fmt.Fprintf(os.Stderr, "qstat: invalid option -- '%c'\n%s", a[k], usage)
				return 2
			}
		}
	}
	if format != "" && (!full || format != "json" && format != "dsv") {
		fmt.Fprint(os.Stderr, "qstat: conflicting options.\n"+usage)
		return 2
	}

	rc := 0
	var jobs []*Job
	if len(ids) == 0 {
		for _, j := range st.all() {
			if (finished(j) && !hist) || (j.ArrayIndex != nil && !subjobs) || (arrays && !j.Array) {
				continue
			}
			jobs = append(jobs, j)
		}
	} else {
		for _, id := range ids {
			j := st.find(id)
			if j == nil {
				fmt.Fprintf(os.Stderr, "qstat: Unknown Job Id %s\n", id)
				rc = 153
				continue
			}
			if finished(j) && !hist {
				fmt.Fprintf(os.Stderr, "qstat: %s Job has finished, use -x or -H to obtain historical job information\n", j.ID)
				rc = 35
				continue
			}
			jobs = append(jobs, j)
			if j.Array && subjobs {
				for _, s := range st.subjobs(j) {
					if !finished(s) || hist {
						jobs = append(jobs, s)
					}
				}
			}
		}
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	switch {
	case format == "json":
		writeJSON(w, st, jobs)
	case full:
		for _, j := range jobs {
			writePlain(w, st, j)
		}
	default:
		writeTable(w, jobs)
	}
	return rc
}

// attr is one attribute in qstat's order; v is a string, an int, a
// []attr (a dotted family such as Resource_List) or raw (a string
// written without escaping backslashes, as qstat does in Variable_List).
type attr struct {
	k string
	v any
}

type raw string

func attrs(st *state, j *Job) []attr {
	server := serverName()
	var a []attr
	add := func(k string, v any) { a = append(a, attr{k, v}) }
	add("Job_Name", j.Name)
	add("Job_Owner", j.Owner)
	ran := j.Stime > 0 && !j.Array
	if ran {
		used := j.Used
		if j.State == "R" {
			used = time.Now().Unix() - j.Stime
		}
		add("resources_used", []attr{{"cpupercent", 0}, {"cput", "00:00:00"}, {"mem", "0kb"},
			{"ncpus", j.NCPUs}, {"vmem", "0kb"}, {"walltime", hms(used)}})
	}
	add("job_state", j.State)
	add("queue", j.Queue)
	add("server", server)
	add("Checkpoint", "u")
	add("ctime", pbsTime(j.Ctime))
	add("Error_Path", server+":"+j.Error)
	if ran {
		add("exec_host", j.ExecHost)
		add("exec_vnode", fmt.Sprintf("(%s:ncpus=%d)", server, j.NCPUs))
	}
	hold := "n"
	if j.Hold {
		hold = "u"
	}
	add("Hold_Types", hold)
	add("Join_Path", j.Join)
	add("Keep_Files", "n")
	add("Mail_Points", "a")
	add("mtime", pbsTime(j.Mtime))
	add("Output_Path", server+":"+j.Output)
	add("Priority", 0)
	add("qtime", pbsTime(j.Ctime))
	add("Rerunable", "True")
	rl := []attr{{"ncpus", j.NCPUs}}
	if j.Mem != "" {
		rl = append(rl, attr{"mem", j.Mem})
	}
	if j.NGPUs > 0 {
		rl = append(rl, attr{"ngpus", j.NGPUs})
	}
	rl = append(rl, attr{"nodect", j.Nodect}, attr{"place", j.Place}, attr{"select", j.Select})
	if j.Walltime > 0 {
		rl = append(rl, attr{"walltime", hms(int64(j.Walltime + 0.999))})
	}
	add("Resource_List", rl)
	if j.Stime > 0 {
		add("stime", pbsTime(j.Stime))
	}
	if j.Obittime > 0 {
		add("obittime", pbsTime(j.Obittime))
	}
	if ran && j.SessionID > 0 {
		add("session_id", j.SessionID)
		add("jobdir", j.Home)
	}
	add("substate", j.Substate)
	var vl []attr
	for _, kv := range j.Vars {
		vl = append(vl, attr{kv[0], raw(kv[1])})
	}
	add("Variable_List", vl)
	if j.Comment != "" {
		add("comment", j.Comment)
	}
	add("etime", pbsTime(j.Ctime))
	if ran {
		add("run_count", j.RunCount)
	}
	if finished(j) && (ran || j.Array) && j.Exit != nil {
		add("Stageout_status", 1)
	}
	if j.Exit != nil {
		add("Exit_status", *j.Exit)
	}
	add("Submit_arguments", j.SubmitArgs)
	if j.Array {
		add("array", "True")
		counts := map[string]int{}
		var remaining []string
		for _, s := range st.subjobs(j) {
			counts[s.State]++
			if s.State == "Q" || s.State == "H" {
				remaining = append(remaining, strconv.Itoa(*s.ArrayIndex))
			}
		}
		add("array_state_count", fmt.Sprintf("Queued:%d Running:%d Exiting:%d Expired:%d",
			counts["Q"]+counts["H"], counts["R"], counts["E"], counts["X"]+counts["F"]))
		add("array_indices_submitted", indexRange(j.Indices))
		rem := "-"
		if len(remaining) > 0 {
			rem = strings.Join(remaining, ",")
		}
		add("array_indices_remaining", rem)
	}
	if j.ArrayIndex != nil {
		add("array_id", j.ArrayID)
		add("array_index", *j.ArrayIndex)
	}
	if finished(j) {
		add("history_timestamp", max(j.Obittime, j.Mtime))
	}
	add("project", "_pbs_project_default")
	add("Submit_Host", server)
	return a
}

func indexRange(ix []int) string {
	if len(ix) == 0 {
		return ""
	}
	s := fmt.Sprintf("%d-%d", ix[0], ix[len(ix)-1])
	if len(ix) > 1 && ix[1]-ix[0] > 1 {
		s += fmt.Sprintf(":%d", ix[1]-ix[0])
	}
	return s
}

var number = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

func writeJSON(w *bufio.Writer, st *state, jobs []*Job) {
	ts := time.Now().Unix()
	tsv := strconv.FormatInt(ts, 10)
	if ts%256 == 0 {
		tsv = `""` // OpenPBS 23.06 quirk (see testdata/samples/README.md)
	}
	fmt.Fprintf(w, "{\n    \"timestamp\":%s,\n    \"pbs_version\":\"23.06.06\",\n    \"pbs_server\":%s", tsv, quote(serverName()))
	if len(jobs) == 0 {
		w.WriteString("\n}") // no Jobs key, no trailing newline
		return
	}
	w.WriteString(",\n    \"Jobs\":{\n")
	for i, j := range jobs {
		fmt.Fprintf(w, "        %s:", quote(j.ID))
		writeObj(w, attrs(st, j), 2)
		if i < len(jobs)-1 {
			w.WriteString(",")
		}
		w.WriteString("\n")
	}
	w.WriteString("    }\n}\n")
}

func writeObj(w *bufio.Writer, a []attr, depth int) {
	ind := strings.Repeat("    ", depth)
	w.WriteString("{\n")
	for i, x := range a {
		fmt.Fprintf(w, "%s    %s:", ind, quote(x.k))
		switch v := x.v.(type) {
		case string:
			w.WriteString(quote(v))
		case raw:
			if number.MatchString(string(v)) {
				w.WriteString(string(v)) // values that parse as numbers are bare
			} else {
				// qstat escapes quotes but not backslashes here: invalid JSON
				// escapes, as a real server emits them.
				w.WriteString(`"` + strings.ReplaceAll(string(v), `"`, `\"`) + `"`)
			}
		case int:
			w.WriteString(strconv.Itoa(v))
		case int64:
			w.WriteString(strconv.FormatInt(v, 10))
		case []attr:
			writeObj(w, v, depth+1)
		}
		if i < len(a)-1 {
			w.WriteString(",")
		}
		w.WriteString("\n")
	}
	w.WriteString(ind + "}")
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// writePlain is `qstat -f` without -F (not wrapped at 80 columns).
func writePlain(w *bufio.Writer, st *state, j *Job) {
	fmt.Fprintf(w, "Job Id: %s\n", j.ID)
	for _, a := range attrs(st, j) {
		switch v := a.v.(type) {
		case []attr:
			if a.k == "Variable_List" {
				var kv []string
				for _, x := range v {
					kv = append(kv, fmt.Sprintf("%s=%v", x.k, x.v))
				}
				fmt.Fprintf(w, "    %s = %s\n", a.k, strings.Join(kv, ","))
				continue
			}
			for _, x := range v {
				fmt.Fprintf(w, "    %s.%s = %v\n", a.k, x.k, x.v)
			}
		default:
			fmt.Fprintf(w, "    %s = %v\n", a.k, v)
		}
	}
	w.WriteString("\n")
}

func writeTable(w *bufio.Writer, jobs []*Job) {
	if len(jobs) == 0 {
		return
	}
	w.WriteString("Job id            Name             User              Time Use S Queue\n")
	w.WriteString("----------------  ---------------- ----------------  -------- - -----\n")
	for _, j := range jobs {
		use := "0"
		if j.Stime > 0 && !j.Array {
			use = "00:00:00"
		}
		fmt.Fprintf(w, "%-17s %-16.16s %-16.16s  %8s %s %-15s\n", j.ID, j.Name, strings.Split(j.Owner, "@")[0], use, j.State, j.Queue)
	}
}
