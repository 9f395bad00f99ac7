package batch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Exec runs commands as processes. Env, if set, replaces the environment
// (e.g. to point SLURM_CONF at a test cluster); Path prefixes the command
// names (a directory of scheduler binaries, "" for PATH).
type Exec struct {
	Env  []string
	Path string
}

// CommandError is a scheduler command that failed; it carries the
// scheduler's own message.
type CommandError struct {
	Cmd      string
	ExitCode int
	Stderr   string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s exited %d: %s", e.Cmd, e.ExitCode, strings.TrimSpace(e.Stderr))
}

type dirKey struct{}

// InDir returns a context under which Exec runs commands in dir. PBS puts
// a job's default output files in the directory qsub runs in, so Submit
// runs qsub in the job's WorkDir.
func InDir(ctx context.Context, dir string) context.Context {
	return context.WithValue(ctx, dirKey{}, dir)
}

// Run implements Commander.
func (x Exec) Run(ctx context.Context, name string, args []string, stdin io.Reader) ([]byte, []byte, error) {
	path := name
	if x.Path != "" {
		path = x.Path + "/" + name
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if dir, _ := ctx.Value(dirKey{}).(string); dir != "" {
		cmd.Dir = dir
	}
	if x.Env != nil {
		cmd.Env = x.Env
	}
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.Bytes(), errb.Bytes(), &CommandError{Cmd: name, ExitCode: ee.ExitCode(), Stderr: errb.String()}
	}
	if err != nil {
		return out.Bytes(), errb.Bytes(), fmt.Errorf("run %s: %w", name, err)
	}
	return out.Bytes(), errb.Bytes(), nil
}
