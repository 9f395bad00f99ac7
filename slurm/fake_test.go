package slurm

import (
	"context"
	"io"
	"strings"
	"sync"

	"github.com/scalebox-hpc/scalebox/batch"
)

// call is one command a fakeCommander ran.
type call struct {
	Name  string
	Args  []string
	Stdin string
}

// reply is a fakeCommander's answer to one command name.
type reply struct {
	Stdout, Stderr string
	ExitCode       int   // non-zero: a *batch.CommandError
	Err            error // returned as is, if set
}

// fakeCommander answers each command name with a recorded reply and keeps
// the calls.
type fakeCommander struct {
	mu      sync.Mutex
	replies map[string]reply
	calls   []call
}

func newFake(replies map[string]reply) *fakeCommander {
	return &fakeCommander{replies: replies}
}

func (f *fakeCommander) Run(_ context.Context, name string, args []string, stdin io.Reader) ([]byte, []byte, error) {
	c := call{Name: name, Args: append([]string(nil), args...)}
	if stdin != nil {
		b, _ := io.ReadAll(stdin)
		c.Stdin = string(b)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	r, ok := f.replies[name]
	f.mu.Unlock()
	if !ok {
		return nil, []byte(name + ": command not found"), &batch.CommandError{Cmd: name, ExitCode: 127, Stderr: name + ": command not found"}
	}
	if r.Err != nil {
		return []byte(r.Stdout), []byte(r.Stderr), r.Err
	}
	if r.ExitCode != 0 {
		return []byte(r.Stdout), []byte(r.Stderr), &batch.CommandError{Cmd: name, ExitCode: r.ExitCode, Stderr: r.Stderr}
	}
	return []byte(r.Stdout), []byte(r.Stderr), nil
}

func (f *fakeCommander) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c.Name == name {
			n++
		}
	}
	return n
}

func (f *fakeCommander) last(name string) call {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.calls) - 1; i >= 0; i-- {
		if f.calls[i].Name == name {
			return f.calls[i]
		}
	}
	return call{}
}

func (c call) String() string { return c.Name + " " + strings.Join(c.Args, " ") }
