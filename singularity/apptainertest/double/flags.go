package main

import (
	"encoding/csv"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// The flag parser follows spf13/pflag as Apptainer and SingularityCE
// configure it (SetInterspersed(false)): flags end at the first argument
// that is not a flag (or after "--"); "--name=value", "--name value",
// "-n value", "-nvalue", "-n=value" and clusters of short booleans
// ("-eC") are accepted; error texts are pflag's.

type flagKind int

const (
	boolFlag flagKind = iota
	stringFlag
	arrayFlag  // repeatable, each value kept as given (pflag StringArray)
	sliceFlag  // repeatable, each value CSV-split (pflag StringSlice)
	envMapFlag // pflag StringToString, as Apptainer's --env
)

type flagDef struct {
	name  string
	short byte
	kind  flagKind
	usage string
	// env lists the suffixes of the APPTAINER_/SINGULARITY_ variables
	// that set this flag when the command line does not.
	env []string
	// only restricts the flag to one flavour ("apptainer" or
	// "singularity-ce"); "" is both.
	only string
	// emulated is false for flags the double parses but does not
	// emulate: using one is a fatal error naming the flag.
	emulated bool
	// inert marks flags that are accepted and have no effect here
	// (security and resource options that do not change what a test
	// can observe); they are emulated in the sense that nothing fails.
	inert bool
}

type flagSet struct {
	cmd     string
	defs    []flagDef
	changed map[string]bool
	bools   map[string]bool
	strs    map[string]string
	lists   map[string][]string
	envMap  map[string]string
	envKeys []string // --env keys in order of first appearance
}

func newFlagSet(cmd string, fl *flavor, defs []flagDef) *flagSet {
	fs := &flagSet{
		cmd:     cmd,
		changed: map[string]bool{},
		bools:   map[string]bool{},
		strs:    map[string]string{},
		lists:   map[string][]string{},
		envMap:  map[string]string{},
	}
	for _, d := range defs {
		if d.only == "" || d.only == fl.name {
			fs.defs = append(fs.defs, d)
		}
	}
	return fs
}

func (fs *flagSet) lookup(name string) *flagDef {
	for i := range fs.defs {
		if fs.defs[i].name == name {
			return &fs.defs[i]
		}
	}
	return nil
}

func (fs *flagSet) lookupShort(c byte) *flagDef {
	for i := range fs.defs {
		if fs.defs[i].short == c {
			return &fs.defs[i]
		}
	}
	return nil
}

// errHelp is returned when -h/--help was given.
var errHelp = fmt.Errorf("help requested")

// parse consumes flags and returns the remaining arguments.
func (fs *flagSet) parse(args []string) ([]string, error) {
	for len(args) > 0 {
		a := args[0]
		switch {
		case a == "--":
			return args[1:], nil
		case strings.HasPrefix(a, "--"):
			rest, err := fs.parseLong(a, args[1:])
			if err != nil {
				return nil, err
			}
			args = rest
		case strings.HasPrefix(a, "-") && len(a) > 1:
			rest, err := fs.parseShort(a, args[1:])
			if err != nil {
				return nil, err
			}
			args = rest
		default:
			return args, nil
		}
	}
	return args, nil
}

func (fs *flagSet) parseLong(a string, rest []string) ([]string, error) {
	name, value, hasValue := strings.Cut(a[2:], "=")
	d := fs.lookup(name)
	if d == nil {
		if name == "help" {
			return nil, errHelp
		}
		return nil, fmt.Errorf("unknown flag: --%s", name)
	}
	switch {
	case hasValue:
	case d.kind == boolFlag:
		value = "true"
	case len(rest) > 0:
		value, rest = rest[0], rest[1:]
	default:
		return nil, fmt.Errorf("flag needs an argument: %s", a)
	}
	return rest, fs.set(d, value, false)
}

func (fs *flagSet) parseShort(a string, rest []string) ([]string, error) {
	shorthands := a[1:]
	for len(shorthands) > 0 {
		c := shorthands[0]
		d := fs.lookupShort(c)
		if d == nil {
			if c == 'h' {
				return nil, errHelp
			}
			return nil, fmt.Errorf("unknown shorthand flag: %q in -%s", c, shorthands)
		}
		var value string
		switch {
		case len(shorthands) > 2 && shorthands[1] == '=':
			value, shorthands = shorthands[2:], ""
		case d.kind == boolFlag:
			value, shorthands = "true", shorthands[1:]
		case len(shorthands) > 1:
			value, shorthands = shorthands[1:], ""
		case len(rest) > 0:
			value, rest, shorthands = rest[0], rest[1:], ""
		default:
			return nil, fmt.Errorf("flag needs an argument: %q in -%s", c, shorthands)
		}
		if err := fs.set(d, value, true); err != nil {
			return nil, err
		}
	}
	return rest, nil
}

func (fs *flagSet) set(d *flagDef, value string, short bool) error {
	flagName := "--" + d.name
	if d.short != 0 {
		flagName = fmt.Sprintf("-%c, --%s", d.short, d.name)
	}
	invalid := func(err error) error {
		return fmt.Errorf("invalid argument %q for %q flag: %v", value, flagName, err)
	}
	fs.changed[d.name] = true
	switch d.kind {
	case boolFlag:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return invalid(err)
		}
		fs.bools[d.name] = b
	case stringFlag:
		fs.strs[d.name] = value
	case arrayFlag:
		fs.lists[d.name] = append(fs.lists[d.name], value)
	case sliceFlag:
		if value == "" {
			return nil
		}
		r := csv.NewReader(strings.NewReader(value))
		vals, err := r.Read()
		if err != nil {
			return invalid(err)
		}
		fs.lists[d.name] = append(fs.lists[d.name], vals...)
	case envMapFlag:
		// pflag's stringToString: one "=" → the value with surrounding
		// double quotes trimmed; more → CSV-parsed into several pairs.
		var pairs []string
		switch strings.Count(value, "=") {
		case 0:
			return invalid(fmt.Errorf("%s must be formatted as key=value", value))
		case 1:
			pairs = []string{strings.Trim(value, `"`)}
		default:
			r := csv.NewReader(strings.NewReader(value))
			var err error
			if pairs, err = r.Read(); err != nil {
				return invalid(err)
			}
		}
		for _, p := range pairs {
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				return invalid(fmt.Errorf("%s must be formatted as key=value", p))
			}
			if _, seen := fs.envMap[k]; !seen {
				fs.envKeys = append(fs.envKeys, k)
			}
			fs.envMap[k] = v
		}
	}
	return nil
}

// applyEnv sets flags the command line left unset from APPTAINER_<KEY>
// (or SINGULARITY_<KEY>) variables, as Apptainer's command manager does.
// For repeatable flags the variable's values come first.
func (fs *flagSet) applyEnv(fl *flavor) error {
	for i := range fs.defs {
		d := &fs.defs[i]
		for _, suffix := range d.env {
			value, ok := fl.lookupConfigEnv(suffix)
			if !ok {
				continue
			}
			switch d.kind {
			case arrayFlag, sliceFlag:
				prev := fs.lists[d.name]
				fs.lists[d.name] = nil
				if err := fs.set(d, value, false); err != nil {
					return err
				}
				fs.lists[d.name] = append(fs.lists[d.name], prev...)
			default:
				if fs.changed[d.name] {
					continue
				}
				if err := fs.set(d, value, false); err != nil {
					return err
				}
			}
			break
		}
	}
	return nil
}

// usage renders the options list shown with flag errors and --help.
func (fs *flagSet) usage() string {
	defs := append([]flagDef(nil), fs.defs...)
	sort.Slice(defs, func(i, j int) bool { return defs[i].name < defs[j].name })
	var b strings.Builder
	for _, d := range defs {
		left := "    "
		if d.short != 0 {
			left = fmt.Sprintf("-%c, ", d.short)
		}
		left += "--" + d.name
		switch d.kind {
		case stringFlag:
			left += " string"
		case arrayFlag, sliceFlag:
			left += " strings"
		case envMapFlag:
			left += " stringToString"
		}
		fmt.Fprintf(&b, "  %-32s %s\n", left, d.usage)
	}
	return b.String()
}

// emulationCheck returns an error for the first flag that was set but is
// not emulated by the double.
func (fs *flagSet) emulationCheck() error {
	for _, d := range fs.defs {
		if fs.changed[d.name] && !d.emulated && !d.inert {
			return fmt.Errorf("apptainertest double: --%s is parsed but not emulated; extend singularity/apptainertest/double or drop the flag", d.name)
		}
	}
	return nil
}

func (fs *flagSet) bool(name string) bool                   { return fs.bools[name] }
func (fs *flagSet) str(name string) string                  { return fs.strs[name] }
func (fs *flagSet) list(name string) []string               { return fs.lists[name] }
func (fs *flagSet) isSet(name string) bool                  { return fs.changed[name] }
func (fs *flagSet) setBool(name string, v bool)             { fs.bools[name] = v }
func (fs *flagSet) envPairs() (map[string]string, []string) { return fs.envMap, fs.envKeys }

// lookupConfigEnv finds a tool setting variable: APPTAINER_<suffix> then
// SINGULARITY_<suffix> for Apptainer, SINGULARITY_<suffix> for
// SingularityCE.
func (fl *flavor) lookupConfigEnv(suffix string) (string, bool) {
	for _, p := range fl.configPrefixes {
		if v, ok := os.LookupEnv(p + suffix); ok {
			return v, true
		}
	}
	return "", false
}
