package singularity

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/scalebox-hpc/scalebox/batch"
)

// ErrNotFound is returned by Detect when no container tool is available.
var ErrNotFound = errors.New("neither apptainer nor singularity found on PATH: install Apptainer (or SingularityCE) or configure the tool's path")

// Config says how to find the container tool.
type Config struct {
	// Path is an explicit apptainer or singularity binary; "" looks up
	// apptainer, then singularity, on PATH.
	Path string
	// Commander runs the tool; nil runs processes (batch.Exec{}).
	Commander batch.Commander
	// LookPath finds a program on PATH; nil is exec.LookPath.
	LookPath func(name string) (string, error)
}

// Tool is a detected apptainer or singularity binary. It implements
// container.Engine.
type Tool struct {
	path   string
	info   Info
	runner batch.Commander
}

// Detect finds the container tool, runs "<bin> --version" and checks that
// the version is supported.
func Detect(ctx context.Context, cfg Config) (*Tool, error) {
	runner := cfg.Commander
	if runner == nil {
		runner = batch.Exec{}
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
	stdout, stderr, err := runner.Run(ctx, path, []string{"--version"}, nil)
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
func NewTool(path string, info Info, runner batch.Commander) *Tool {
	if runner == nil {
		runner = batch.Exec{}
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
	if _, _, err := t.runner.Run(ctx, t.path, []string{"pull", dest, ref}, nil); err != nil {
		return fmt.Errorf("pull %s with %s: %w", ref, t.info, err)
	}
	return nil
}
