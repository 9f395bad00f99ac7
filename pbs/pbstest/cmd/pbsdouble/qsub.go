package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type submit struct {
	name, queue, account, out, err, join, array string
	hold, allEnv                                bool
	res                                         map[string]string
	vars                                        []string
}

// parseOpts applies qsub options from args; it returns the operands.
func (o *submit) parseOpts(args []string) ([]string, error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return args[i:], nil
		}
		if a == "--" {
			return args[i+1:], nil
		}
		flag := a[1:2]
		val := a[2:]
		needs := strings.Contains("NqAlJoejvWSmMPrkaCcup", flag)
		if needs && val == "" {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("option requires an argument -- '%s'", flag)
			}
			i++
			val = args[i]
		}
		switch flag {
		case "N":
			o.name = val
		case "q":
			o.queue = val
		case "A":
			o.account = val
		case "l":
			for _, kv := range splitRes(val) {
				k, v, _ := strings.Cut(kv, "=")
				o.res[k] = v
			}
		case "J":
			o.array = val
		case "o":
			o.out = val
		case "e":
			o.err = val
		case "j":
			o.join = val
		case "h":
			o.hold = true
		case "V":
			o.allEnv = true
		case "v":
			o.vars = append(o.vars, strings.Split(val, ",")...)
		case "W", "S", "m", "M", "P", "r", "k", "a", "C", "c", "u", "p":
			// accepted and ignored by the double
		default:
			return nil, fmt.Errorf("invalid option -- '%s'", flag)
		}
	}
	return nil, nil
}

// splitRes splits "select=1:ncpus=2,walltime=10" on commas.
func splitRes(s string) []string { return strings.Split(s, ",") }

func qsub(st *state, args []string) int {
	o := &submit{res: map[string]string{}}
	// Command-line options win over #PBS directives: parse them first to
	// find the script, then the directives, then the options again.
	operands, err := o.parseOpts(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "qsub: %v\nusage: qsub [-J X-Y[:Z]] [-N name] [-q queue] [-l resource_list] [-o path] [-e path] [-j oe] [-h] [-V] [-v list] [script]\n", err)
		return 2
	}
	var script []byte
	if len(operands) > 0 && operands[0] != "-" {
		script, err = os.ReadFile(operands[0])
		if err != nil {
			fmt.Fprintf(os.Stderr, "qsub: script file:: %v\n", err)
			return 1
		}
	} else {
		script, _ = io.ReadAll(os.Stdin)
	}
	d := &submit{res: map[string]string{}}
	if _, err := d.parseOpts(directives(script)); err != nil {
		fmt.Fprintf(os.Stderr, "qsub: directive error: %v\n", err)
		return 2
	}
	if _, err := d.parseOpts(args); err != nil {
		return 2
	}
	o = d

	if o.queue != "" && o.queue != "workq" {
		fmt.Fprintln(os.Stderr, "qsub: Unknown queue")
		return 170
	}
	var wall float64
	if w, ok := o.res["walltime"]; ok {
		if wall, err = parseDuration(w); err != nil {
			fmt.Fprintln(os.Stderr, "qsub: Illegal attribute or resource value Resource_List.walltime")
			return 166
		}
	}
	var indices []int
	if o.array != "" {
		if indices, err = parseRange(o.array); err != nil {
			fmt.Fprintln(os.Stderr, "qsub: illegal -J value")
			return 2
		}
	}
	if o.join != "" && o.join != "oe" && o.join != "eo" && o.join != "n" {
		fmt.Fprintln(os.Stderr, "qsub: illegal -j value")
		return 2
	}

	server := serverName()
	uname := "root"
	home := os.Getenv("HOME")
	if u, err := user.Current(); err == nil {
		uname = u.Username
		if home == "" {
			home = u.HomeDir
		}
	}
	wd, _ := os.Getwd()
	if home == "" {
		home = wd
	}

	unlock := st.lock()
	defer unlock()
	seq := st.nextSeq() // a refused submission still uses up an id
	if os.Geteuid() == 0 && os.Getenv("PBS_DOUBLE_REFUSE_ROOT") == "1" {
		fmt.Fprintln(os.Stderr, "qsub: Bad UID for job execution")
		return 175
	}

	id := fmt.Sprintf("%d.%s", seq, server)
	if indices != nil {
		id = fmt.Sprintf("%d[].%s", seq, server)
	}
	name := o.name
	if name == "" {
		name = "STDIN"
		if len(operands) > 0 && operands[0] != "-" {
			name = filepath.Base(operands[0])
		}
	}
	scriptPath := filepath.Join(st.dir, "scripts", strconv.Itoa(seq)+".sh")
	if err := os.WriteFile(scriptPath, script, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "qsub: %v\n", err)
		return 1
	}
	now := time.Now().Unix()
	sel := o.res["select"]
	if sel == "" {
		sel = "1:ncpus=" + defaultStr(o.res["ncpus"], "1")
	}
	nodect, ncpus, mem, ngpus := parseSelect(sel)
	place := defaultStr(o.res["place"], "pack")
	suffix := strconv.Itoa(seq)
	if indices != nil {
		suffix += ".^array_index^"
	}
	outPath := resolvePath(o.out, wd, name+".o"+suffix)
	errPath := resolvePath(o.err, wd, name+".e"+suffix)
	join := "n"
	if o.join == "oe" || o.join == "eo" {
		join = "oe"
	}
	vars := [][2]string{
		{"PBS_O_HOME", home}, {"PBS_O_LANG", os.Getenv("LANG")}, {"PBS_O_LOGNAME", uname},
		{"PBS_O_PATH", os.Getenv("PATH")}, {"PBS_O_MAIL", "/var/mail/" + uname},
		{"PBS_O_SHELL", defaultStr(os.Getenv("SHELL"), "/bin/bash")}, {"PBS_O_WORKDIR", wd},
		{"PBS_O_SYSTEM", "Linux"}, {"PBS_O_QUEUE", "workq"}, {"PBS_O_HOST", server},
	}
	var env []string
	if o.allEnv {
		env = os.Environ()
	}
	for _, v := range o.vars {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			val = os.Getenv(k)
		}
		env = append(env, k+"="+val)
		vars = append(vars, [2]string{k, val})
	}
	j := &Job{
		ID: id, Seq: seq, Name: name, Owner: uname + "@" + server, Queue: "workq", State: "Q", Substate: 10,
		Ctime: now, Hold: o.hold, Select: sel, Place: place, Nodect: nodect, NCPUs: ncpus, Mem: mem, NGPUs: ngpus,
		Walltime: wall, Output: outPath, Error: errPath, Join: join, Vars: vars, Env: env,
		SubmitArgs: strings.Join(args, " "), Script: scriptPath, Workdir: wd, Home: home,
		Array: indices != nil, Indices: indices,
	}
	if o.hold {
		j.State, j.Substate = "H", 20
	}
	st.save(j)
	for _, i := range indices {
		s := *j
		s.ID, s.Array, s.Indices, s.ArrayID = subID(j, i), false, nil, j.ID
		s.ArrayIndex = &i
		s.Output = strings.ReplaceAll(j.Output, "^array_index^", strconv.Itoa(i))
		s.Error = strings.ReplaceAll(j.Error, "^array_index^", strconv.Itoa(i))
		st.save(&s)
	}
	if !o.hold {
		if err := startSupervisor(st, id); err != nil {
			fmt.Fprintf(os.Stderr, "qsub: %v\n", err)
			return 1
		}
	}
	fmt.Println(id)
	return 0
}

// startSupervisor starts `pbsdouble _run ID` detached (its own session),
// with its output in $PBS_DOUBLE_DIR/supervisor.log.
func startSupervisor(st *state, id string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(st.dir, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(self, "_run", id)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return cmd.Process.Release()
}

// directives returns the words of the #PBS lines before the first command.
func directives(script []byte) []string {
	var words []string
	sc := bufio.NewScanner(strings.NewReader(string(script)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "#") {
			break
		}
		if rest, ok := strings.CutPrefix(line, "#PBS"); ok {
			words = append(words, strings.Fields(rest)...)
		}
	}
	return words
}

func resolvePath(p, wd, def string) string {
	if p == "" {
		return filepath.Join(wd, def)
	}
	if _, after, ok := strings.Cut(p, ":"); ok && !strings.HasPrefix(p, "/") {
		p = after // host:path
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(wd, p)
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		p = filepath.Join(p, def)
	}
	return p
}

// parseDuration parses [[HH:]MM:]SS (seconds may be fractional).
func parseDuration(s string) (float64, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 3 {
		return 0, fmt.Errorf("bad duration")
	}
	var t float64
	for _, p := range parts {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || p == "" || strings.ContainsAny(p, "eE+-") {
			return 0, fmt.Errorf("bad duration")
		}
		t = t*60 + v
	}
	return t, nil
}

// parseRange parses -J X-Y[:Z][%N].
func parseRange(s string) ([]int, error) {
	s, _, _ = strings.Cut(s, "%")
	r, stepS, hasStep := strings.Cut(s, ":")
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return nil, fmt.Errorf("bad range")
	}
	lo, err1 := strconv.Atoi(a)
	hi, err2 := strconv.Atoi(b)
	step := 1
	var err3 error
	if hasStep {
		step, err3 = strconv.Atoi(stepS)
	}
	if err1 != nil || err2 != nil || err3 != nil || lo < 0 || hi <= lo || step < 1 || (hi-lo)/step > 10000 {
		return nil, fmt.Errorf("bad range")
	}
	var out []int
	for i := lo; i <= hi; i += step {
		out = append(out, i)
	}
	return out, nil
}

// parseSelect reads "N:ncpus=C:mem=M:ngpus=G" (first chunk only).
func parseSelect(sel string) (nodect, ncpus int, mem string, ngpus int) {
	nodect, ncpus = 1, 1
	parts := strings.Split(strings.Split(sel, "+")[0], ":")
	if n, err := strconv.Atoi(parts[0]); err == nil && n > 0 {
		nodect = n
	}
	for _, p := range parts {
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "ncpus":
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				ncpus = n
			}
		case "mem":
			mem = v
		case "ngpus":
			ngpus, _ = strconv.Atoi(v)
		}
	}
	return nodect, ncpus * nodect, mem, ngpus * nodect
}

func defaultStr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
