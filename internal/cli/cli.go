// Package cli is the `scalebox` command line: kong command structs whose
// Run methods talk to the broker through the api client. Output is
// readable by people, or JSON with --json for scripts; exit codes are
// stable (see ExitCode).
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/alecthomas/kong"

	"github.com/scalebox-hpc/scalebox/api"
)

// Exit codes of the scalebox command.
const (
	ExitOK           = 0
	ExitError        = 1 // broker unreachable, internal error
	ExitNotFound     = 2 // Scalebox's "not found"
	ExitInvalid      = 3 // bad input: app.yaml, arguments, request
	ExitConflict     = 4 // state does not allow it (already exists, app finished)
	ExitUnauthorized = 5 // missing, unknown or insufficient token
)

// ExitCode maps an error to the command's exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeNotFound:
			return ExitNotFound
		case api.CodeBadRequest, api.CodeInvalidApp, api.CodeTooLarge:
			return ExitInvalid
		case api.CodeConflict:
			return ExitConflict
		case api.CodeUnauthorized, api.CodeForbidden:
			return ExitUnauthorized
		}
		return ExitError
	}
	var ie *invalidError
	var pe *kong.ParseError
	if errors.As(err, &ie) || errors.As(err, &pe) {
		return ExitInvalid
	}
	return ExitError
}

// invalidError is bad local input (a file, an argument).
type invalidError struct{ err error }

func (e *invalidError) Error() string { return e.err.Error() }
func (e *invalidError) Unwrap() error { return e.err }

func invalid(format string, args ...any) error {
	return &invalidError{fmt.Errorf(format, args...)}
}

// Globals are flags every command takes.
type Globals struct {
	Broker    string `env:"SCALEBOX_BROKER" default:"http://127.0.0.1:8080" help:"Broker address."`
	Token     string `env:"SCALEBOX_TOKEN" help:"API token (default: the contents of --token-file)."`
	TokenFile string `env:"SCALEBOX_TOKEN_FILE" default:"~/.scalebox/token" help:"File holding the API token." type:"path"`
	JSON      bool   `help:"Print JSON for scripts."`

	out io.Writer
}

// Env carries what commands need from outside: output and a client.
type Env struct {
	Ctx    context.Context
	Out    io.Writer
	Err    io.Writer
	Client *api.Client
	JSON   bool
}

func (g *Globals) env(ctx context.Context) *Env {
	tok := g.Token
	if tok == "" && g.TokenFile != "" {
		if b, err := os.ReadFile(expandHome(g.TokenFile)); err == nil {
			tok = strings.TrimSpace(string(b))
		}
	}
	return &Env{Ctx: ctx, Out: g.out, Err: os.Stderr, Client: api.NewClient(g.Broker, tok), JSON: g.JSON}
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, rest)
		}
	}
	return p
}

// CLI is the root command.
type CLI struct {
	Globals

	Run       RunCmd       `cmd:"" help:"Run an app on this machine: create it, add start tasks from stdin, run every module until done."`
	App       AppCmd       `cmd:"" help:"Create, inspect and control apps."`
	Task      TaskCmd      `cmd:"" help:"Add and inspect tasks."`
	Semaphore SemaphoreCmd `cmd:"" help:"App-scoped counters."`
	Variable  VariableCmd  `cmd:"" help:"App-scoped key/values."`
	Pilot     PilotCmd     `cmd:"" help:"Run, inspect and drain pilots; print their batch scripts."`
	Site      SiteCmd      `cmd:"" help:"Sites: where pilots run (Slurm partitions, PBS queues, this host)."`
	Token     TokenCmd     `cmd:"" help:"Create API tokens (admin)."`
	Version   VersionCmd   `cmd:"" help:"Print the version."`
	SlotAgent SlotAgentCmd `cmd:"" name:"slot-agent" hidden:"" help:"Run the slot agent inside a slot container (started by the pilot)."`
}

// Version is set at build time.
var Version = "dev"

// VersionCmd prints the version.
type VersionCmd struct{}

// Run prints the version.
func (VersionCmd) Run(e *Env) error {
	_, err := fmt.Fprintln(e.Out, "scalebox", Version)
	return err
}

// Main parses args and runs the command; it returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c CLI
	c.out = stdout
	parser, err := kong.New(&c,
		kong.Name("scalebox"),
		kong.Description("Scalebox: streaming pipelines of single-machine programs on HPC and cloud clusters."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(int) {}),
		kong.UsageOnError(),
		// Scalebox's `task add -h k=v` needs -h: help stays on --help.
		kong.PostBuild(func(k *kong.Kong) error { k.Model.HelpFlag.Short = 0; return nil }),
	)
	if err != nil {
		fmt.Fprintln(stderr, "scalebox:", err)
		return ExitError
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintln(stderr, "scalebox:", err)
		return ExitInvalid
	}
	if kctx.Command() == "" {
		return ExitOK
	}
	env := c.env(ctx)
	env.Err = stderr
	if err := kctx.Run(env, &c.Globals); err != nil {
		fmt.Fprintln(stderr, "scalebox:", err)
		return ExitCode(err)
	}
	return ExitOK
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// environ is the process environment with PWD set to the working directory,
// as a shell sets it (app.yaml files use ${PWD}; a parent process that
// changed directory may have left a stale PWD).
func environ() []string {
	env := os.Environ()
	if wd, err := os.Getwd(); err == nil {
		env = append(env, "PWD="+wd)
	}
	return env
}
