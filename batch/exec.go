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

// Run implements Commander.
func (x Exec) Run(ctx context.Context, name string, args []string, stdin io.Reader) ([]byte, []byte, error) {
	path := name
	if x.Path != "" {
		path = x.Path + "/" + name
	}
	cmd := exec.CommandContext(ctx, path, args...)
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
