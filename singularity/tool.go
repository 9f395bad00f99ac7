package singularity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Runner runs a program: the seam between this package and processes.
// argv[0] is the program (a path or a name looked up on PATH). A Runner
// returns a *CommandError when the program ran and exited non-zero.
type Runner interface {
	Run(ctx context.Context, argv []string) (stdout, stderr []byte, err error)
}

// RunnerFunc adapts a function to Runner.
type RunnerFunc func(ctx context.Context, argv []string) (stdout, stderr []byte, err error)

// Run implements Runner.
func (f RunnerFunc) Run(ctx context.Context, argv []string) ([]byte, []byte, error) {
	return f(ctx, argv)
}

// ExecRunner runs programs as processes. Env, if not nil, replaces the
// environment of the process.
type ExecRunner struct {
	Env []string
}

// CommandError is a program that ran and exited non-zero.
type CommandError struct {
	Argv     []string
	ExitCode int
	Stderr   string
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = "no message on stderr"
	}
	return fmt.Sprintf("%s exited %d: %s", strings.Join(e.Argv, " "), e.ExitCode, clip(msg, 2000))
}

// Run implements Runner.
func (x ExecRunner) Run(ctx context.Context, argv []string) ([]byte, []byte, error) {
	if len(argv) == 0 {
		return nil, nil, errors.New("run: empty command line")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if x.Env != nil {
		cmd.Env = x.Env
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), errb.Bytes(), &CommandError{Argv: argv, ExitCode: ee.ExitCode(), Stderr: errb.String()}
	}
	if err != nil {
		return out.Bytes(), errb.Bytes(), fmt.Errorf("run %s: %w", argv[0], err)
	}
	return out.Bytes(), errb.Bytes(), nil
}

// ErrNotFound is returned by Detect when no container tool is available.
var ErrNotFound = errors.New("neither apptainer nor singularity found on PATH: install Apptainer (or SingularityCE) or configure the tool's path")

// Config says how to find the container tool.
type Config struct {
	// Path is an explicit apptainer or singularity binary; "" looks up
	// apptainer, then singularity, on PATH.
	Path string
	// Runner runs the tool; nil runs processes (ExecRunner{}).
	Runner Runner
	// LookPath finds a program on PATH; nil is exec.LookPath.
	LookPath func(name string) (string, error)
}

// Tool is a detected apptainer or singularity binary. It implements
// container.Engine.
type Tool struct {
	path   string
	info   Info
	runner Runner
}

// Detect finds the container tool, runs "<bin> --version" and checks that
// the version is supported.
func Detect(ctx context.Context, cfg Config) (*Tool, error) {
	runner := cfg.Runner
	if runner == nil {
		runner = ExecRunner{}
	}
	lookPath := cfg.LookPath
	if lookPath == nil {
		lookPath = exec.LookPath
	}
	path := cfg.Path
	if path != "" {
		st, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("container tool %s (configured path): %w", path, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("container tool %s (configured path) is not an executable file", path)
		}
	} else {
		for _, name := range []string{"apptainer", "singularity"} {
			if p, err := lookPath(name); err == nil {
				path = p
				break
			}
		}
		if path == "" {
			return nil, ErrNotFound
		}
	}
	stdout, stderr, err := runner.Run(ctx, []string{path, "--version"})
	if err != nil {
		return nil, fmt.Errorf("container tool %s: %w", path, err)
	}
	out := string(stdout)
	if strings.TrimSpace(out) == "" {
		out = string(stderr)
	}
	info, err := ParseVersion(out)
	if err != nil {
		return nil, fmt.Errorf("container tool %s --version: %w", path, err)
	}
	if err := info.Supported(); err != nil {
		return nil, fmt.Errorf("container tool %s: %w", path, err)
	}
	return &Tool{path: path, info: info, runner: runner}, nil
}

// NewTool returns a Tool for a binary whose version is already known (from
// configuration or a test). runner nil runs processes.
func NewTool(path string, info Info, runner Runner) *Tool {
	if runner == nil {
		runner = ExecRunner{}
	}
	return &Tool{path: path, info: info, runner: runner}
}

// Name is the engine's name: "apptainer" for Apptainer (even when called
// through its singularity symlink), "singularity" for SingularityCE and
// legacy Singularity.
func (t *Tool) Name() string {
	if t.info.Flavour == Apptainer {
		return "apptainer"
	}
	return "singularity"
}

// Path is the tool's binary.
func (t *Tool) Path() string { return t.path }

// Info is the tool's flavour and version.
func (t *Tool) Info() Info { return t.info }

// Pull runs "<bin> pull <dest> <ref>": it fetches a docker://, oras:// or
// library:// reference into the SIF file dest, which must not exist.
func (t *Tool) Pull(ctx context.Context, dest, ref string) error {
	img, err := ClassifyImage(ref)
	if err != nil {
		return err
	}
	if !img.Kind.Remote() {
		return imageErr(ref, ErrBadRef, "pull needs a docker://, oras:// or library:// reference, not a local %s", img.Kind)
	}
	argv := []string{t.path, "pull", dest, ref}
	if _, _, err := t.runner.Run(ctx, argv); err != nil {
		return fmt.Errorf("pull %s with %s: %w", ref, t.info, err)
	}
	return nil
}
