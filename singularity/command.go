package singularity

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/scalebox-hpc/scalebox/container"
)

// How the environment reaches the container
//
// Spec.Env is not passed as --env arguments. Depending on the version,
// "--env K=V" is split on commas (Singularity 3.6–3.8, SingularityCE before
// 3.9.8, Apptainer before 1.0.2), CSV-parsed when the value holds another
// "=", or stripped of surrounding double quotes. Instead each K=V becomes
// APPTAINERENV_K=V (Apptainer) or SINGULARITYENV_K=V (SingularityCE,
// Singularity) in the environment of the engine process, which the tool
// passes on byte for byte.
//
// Inside the container these variables are exported by a generated shell
// snippet. With --no-eval (Apptainer ≥ 1.1, SingularityCE ≥ 3.10) the
// value is single-quoted and arrives verbatim; Command always adds
// --no-eval there. Older versions double-quote the value, so "$", "`" and
// "\" would be expanded or consumed and control characters mangled:
// Command refuses such values on those versions, naming the variable,
// the tool and its version, instead of corrupting them.

var (
	// reservedEnv are names the tool does not let the environment set (or
	// gives another meaning), with what to do instead.
	reservedEnv = map[string]string{
		"HOME":              "the tool sets HOME itself; pass --home in Flags",
		"UID":               "the tool ignores it",
		"GID":               "the tool ignores it",
		"APPEND_PATH":       "the tool appends its value to PATH instead of setting it",
		"PREPEND_PATH":      "the tool prepends its value to PATH instead of setting it",
		"APPTAINER_SHELL":   "the tool refuses to override it",
		"APPTAINER_APPNAME": "the tool refuses to override it",
	}
)

// feature is a command-line feature that appeared in a given version of
// each flavour; a zero Version means "not in this flavour at all".
type feature struct {
	apptainer, ce, legacy Version
	what                  string
}

var (
	none = Version{Major: -1}
	// Introductions, from the Apptainer, SingularityCE and Singularity
	// change logs.
	featNoEval = feature{V(1, 1, 0), V(3, 10, 0), none, "--no-eval"}
	featRocm   = feature{V(1, 0, 0), V(3, 5, 0), V(3, 5, 0), "--rocm"}
	featEnv    = feature{V(1, 0, 0), V(3, 6, 0), V(3, 6, 0), "environment variables (APPTAINERENV_/SINGULARITYENV_ handling of 3.6)"}
	// flagFeatures gates extra Flags by name.
	flagFeatures = map[string]feature{
		"--env":         {V(1, 0, 0), V(3, 6, 0), V(3, 6, 0), "--env"},
		"--env-file":    {V(1, 0, 0), V(3, 6, 0), V(3, 6, 0), "--env-file"},
		"--rocm":        featRocm,
		"--no-eval":     featNoEval,
		"--no-mount":    {V(1, 0, 0), V(3, 7, 0), V(3, 7, 0), "--no-mount"},
		"--no-umask":    {V(1, 0, 0), V(3, 7, 0), V(3, 7, 0), "--no-umask"},
		"--mount":       {V(1, 0, 0), V(3, 9, 0), none, "--mount"},
		"--compat":      {V(1, 0, 0), V(3, 9, 0), none, "--compat"},
		"--nvccli":      {V(1, 0, 0), V(3, 9, 0), none, "--nvccli"},
		"--unsquash":    {V(1, 1, 0), none, none, "--unsquash"},
		"--oci":         {none, V(4, 0, 0), none, "--oci"},
		"--tmp-sandbox": {none, V(4, 1, 0), none, "--tmp-sandbox"},
		"--keep-layers": {none, V(4, 1, 0), none, "--keep-layers"},
	}
)

// has reports whether the tool's version has the feature.
func (t *Tool) has(f feature) bool {
	var min Version
	switch t.info.Flavour {
	case Apptainer:
		min = f.apptainer
	case SingularityCE:
		min = f.ce
	default:
		min = f.legacy
	}
	return min.Major >= 0 && t.info.Version.AtLeast(min)
}

// need returns an error naming the feature, the tool and its version when
// the tool does not have the feature.
func (t *Tool) need(f feature, why string) error {
	if t.has(f) {
		return nil
	}
	var since []string
	if f.apptainer.Major >= 0 {
		since = append(since, "Apptainer "+f.apptainer.String())
	}
	if f.ce.Major >= 0 {
		since = append(since, "SingularityCE "+f.ce.String())
	}
	if f.legacy.Major >= 0 {
		since = append(since, "Singularity "+f.legacy.String())
	}
	return fmt.Errorf("%s: %s at %s does not support %s; it needs %s or later", why, t.info, t.path, f.what, strings.Join(since, ", "))
}

// EnvPrefix is the prefix that makes a variable of the engine process a
// variable of the container: APPTAINERENV_ or SINGULARITYENV_.
func (t *Tool) EnvPrefix() string {
	if t.info.Flavour == Apptainer {
		return "APPTAINERENV_"
	}
	return "SINGULARITYENV_"
}

// Command implements container.Engine: it returns the argv of "<bin> exec …" that runs s in the
// foreground, and env, the variables to add to the engine process's
// environment (e.g. exec.Cmd.Env = append(StripContainerEnv(os.Environ()),
// env...)) so that the container sees s.Env verbatim.
//
// The argv is, in this order: one "--bind src:dst[:ro]" per bind, then
// "--no-eval" when there is environment and the tool has it, "--pwd DIR",
// "--cleanenv", "--containall", "--writable-tmpfs", "--nv" or "--rocm",
// s.Flags verbatim, the image and s.Argv. Spec.Name and Spec.Network are
// not expressed: "exec" has no names, and Apptainer keeps the host network
// unless Flags ask for another.
func (t *Tool) Command(s *container.Spec) (argv, env []string, err error) {
	if s == nil {
		return nil, nil, errors.New("container spec is nil")
	}
	if s.Image == "" {
		return nil, nil, errors.New("container spec has no Image: give a .sif file, a sandbox directory or a docker://, oras:// or library:// reference")
	}
	if strings.HasPrefix(s.Image, "-") {
		return nil, nil, fmt.Errorf("container image %q starts with '-' and would be read as a flag: use an absolute path", s.Image)
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return nil, nil, fmt.Errorf("container spec for %s has no Argv: give the program to run", s.Image)
	}
	argv = []string{t.path, "exec"}
	for i, b := range s.Binds {
		spec, err := container.BindSpec(b, "apptainer --bind", true)
		if err != nil {
			return nil, nil, fmt.Errorf("bind %d (%s): %w", i, b.Why, err)
		}
		argv = append(argv, "--bind", spec)
	}
	env, err = t.containerEnv(s.Env)
	if err != nil {
		return nil, nil, err
	}
	if len(env) > 0 && t.has(featNoEval) {
		argv = append(argv, "--no-eval")
	}
	if s.Dir != "" {
		if !path.IsAbs(s.Dir) {
			return nil, nil, fmt.Errorf("container working directory %q is not absolute", s.Dir)
		}
		argv = append(argv, "--pwd", s.Dir)
	}
	if s.CleanEnv {
		argv = append(argv, "--cleanenv")
	}
	if s.ContainAll {
		argv = append(argv, "--containall")
	}
	if s.WritableTmpfs {
		argv = append(argv, "--writable-tmpfs")
	}
	switch s.GPU {
	case container.GPUNone:
	case container.GPUNvidia:
		argv = append(argv, "--nv")
	case container.GPUAMD:
		if err := t.need(featRocm, "AMD GPUs"); err != nil {
			return nil, nil, err
		}
		argv = append(argv, "--rocm")
	default:
		return nil, nil, fmt.Errorf("container GPU %q is not one of %q, %q, %q", s.GPU, container.GPUNone, container.GPUNvidia, container.GPUAMD)
	}
	for _, f := range s.Flags {
		if !strings.HasPrefix(f, "--") {
			continue
		}
		name, _, _ := strings.Cut(f, "=")
		if feat, ok := flagFeatures[name]; ok {
			if err := t.need(feat, "flag "+name); err != nil {
				return nil, nil, err
			}
		}
	}
	argv = append(argv, s.Flags...)
	argv = append(argv, s.Image)
	argv = append(argv, s.Argv...)
	return argv, env, nil
}

// containerEnv turns K=V entries into prefixed variables of the engine
// process. A later entry for the same name replaces an earlier one.
func (t *Tool) containerEnv(kvs []string) ([]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	if err := t.need(featEnv, "container environment"); err != nil {
		return nil, err
	}
	noEval := t.has(featNoEval)
	prefix := t.EnvPrefix()
	vars, err := container.ParseEnv(kvs)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(vars))
	for _, e := range vars {
		if why, bad := reservedEnv[e.Name]; bad {
			return nil, fmt.Errorf("container env %s cannot be set through %s%s: %s", e.Name, prefix, e.Name, why)
		}
		if err := t.checkEnvValue(e.Name, e.Value, noEval); err != nil {
			return nil, err
		}
		out = append(out, prefix+e.Name+"="+e.Value)
	}
	return out, nil
}

// checkEnvValue refuses values the tool would not pass on verbatim.
func (t *Tool) checkEnvValue(k, v string, noEval bool) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("container env %s is not valid UTF-8", k)
	}
	if noEval {
		return nil
	}
	for _, r := range v {
		var what string
		switch {
		case r == '$':
			what = "'$' (it would be expanded)"
		case r == '`':
			what = "'`' (it would run a command)"
		case r == '\\':
			what = `'\' (it would be taken as an escape)`
		case unicode.IsControl(r):
			what = fmt.Sprintf("the control character %U (it would be mangled)", r)
		default:
			continue
		}
		return fmt.Errorf("container env %s contains %s: %s at %s evaluates environment values inside the container and has no --no-eval; upgrade to Apptainer 1.1 or SingularityCE 3.10, or pass the value in a file", k, what, t.info, t.path)
	}
	return nil
}

// StripContainerEnv returns environ without APPTAINERENV_ and
// SINGULARITYENV_ variables, so that only the ones Command returns reach
// the container.
func StripContainerEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		if strings.HasPrefix(kv, "APPTAINERENV_") || strings.HasPrefix(kv, "SINGULARITYENV_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

var _ container.Engine = (*Tool)(nil)
