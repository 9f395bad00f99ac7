package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/internal/logging"
	"github.com/scalebox-hpc/scalebox/pilot"
)

// RunCmd is Scalebox's `scalebox run`: create the app, add the start tasks
// read from stdin (one per line) and run every module on this machine with
// a pilot until no task is left to run. Without a reachable broker it
// starts one (scalebox-broker on the embedded SQLite store) for the run.
type RunCmd struct {
	AppFile    string        `name:"app-file" short:"f" default:"app.yaml" help:"The app definition (without one, ./code/run.sh makes a one-module app)." type:"path"`
	EnvFiles   []string      `name:"env-file" short:"e" help:"Extra variable files." type:"path"`
	DB         string        `env:"SCALEBOX_DB" default:"~/.scalebox/scalebox.db" help:"Store of the broker started for the run, if one is started."`
	Scratch    string        `env:"SCALEBOX_SCRATCH" help:"Parent of per-attempt work dirs." type:"path"`
	KeepFailed bool          `name:"keep-failed" help:"Keep the work dirs of failed attempts."`
	Timeout    time.Duration `default:"0s" help:"Give up after this long (0: never)."`
	LogLevel   string        `default:"warn" help:"Log level of the pilot (and the started broker)."`
	Start      []string      `arg:"" optional:"" help:"Start tasks (default: the lines of stdin when it is not a terminal)."`
}

// Run runs the pipeline.
func (c *RunCmd) Run(e *Env, g *Globals) error {
	ctx := e.Ctx
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	log, err := logging.New(c.LogLevel, "console")
	if err != nil {
		return invalid("%w", err)
	}
	defer func() { _ = log.Sync() }()

	req, spec, err := c.appRequest()
	if err != nil {
		return err
	}
	starts, err := c.startTasks()
	if err != nil {
		return err
	}
	client := e.Client
	if client.Healthz(ctx) != nil {
		stop, started, err := startBroker(ctx, c.DB, c.LogLevel, e.Err)
		if err != nil {
			return err
		}
		defer stop()
		client = started
		g.Broker = started.Base()
	}
	a, err := client.AppCreate(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Out, "{\"app_id\":%d}\n", a.ID)
	if len(starts) > 0 {
		tasks := make([]api.TaskInput, len(starts))
		for i, s := range starts {
			tasks[i] = api.TaskInput{Body: s}
		}
		if _, err := client.TaskAdd(ctx, a.ID, &api.TaskAddRequest{Tasks: tasks}); err != nil {
			return err
		}
	}
	slots := map[string]int{}
	for _, m := range spec.Modules {
		n := 0
		for _, s := range m.Slots {
			if ss, err := appspec.ParseSlot(s); err == nil {
				n += ss.Count
			}
		}
		slots[m.Name] = max(n, 1)
	}
	pctx, stopPilot := context.WithCancel(ctx)
	defer stopPilot()
	done := make(chan error, 1)
	var stats *pilot.Stats
	go func() {
		var err error
		stats, err = pilot.Run(pctx, pilot.Config{Broker: client.Base(), Token: client.Token(), AppID: a.ID, Slots: slots,
			Scratch: c.Scratch, Keep: c.KeepFailed, Grace: 10 * time.Second, Log: log.Named("pilot")})
		done <- err
	}()
	final, err := waitForApp(ctx, client, a.ID, done)
	stopPilot()
	if perr := <-done; perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	_ = stats
	if e.JSON {
		return printJSON(e.Out, final)
	}
	if err := printApp(e, final); err != nil {
		return err
	}
	for _, m := range final.Modules {
		for status, n := range m.Counts {
			if status != "OK" && n > 0 {
				return fmt.Errorf("app %d: %d task(s) of %s ended %s (scalebox task list --app-id %d --module %s)", a.ID, n, m.Name, status, a.ID, m.Name)
			}
		}
	}
	return nil
}

// waitForApp returns when the app is finished or cancelled, or has no task
// left that could run.
func waitForApp(ctx context.Context, client *api.Client, appID int64, pilotDone <-chan error) (*api.App, error) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-pilotDone:
			if err == nil {
				err = errors.New("pilot stopped before the app was done")
			}
			return nil, err
		case <-t.C:
		}
		a, err := client.AppGet(ctx, appID)
		if err != nil {
			return nil, err
		}
		if a.Status == "FINISHED" || a.Status == "CANCELLED" {
			return a, nil
		}
		active := int64(0)
		for _, m := range a.Modules {
			active += m.Counts["READY"] + m.Counts["QUEUED"] + m.Counts["RUNNING"] + m.Counts["RETRY_WAIT"]
		}
		if active == 0 {
			return a, nil
		}
	}
}

// appRequest builds the create request from app.yaml, or from ./code for an
// app without one (as Scalebox's `scalebox run` does).
func (c *RunCmd) appRequest() (*api.AppCreateRequest, *appspec.App, error) {
	if _, err := os.Stat(c.AppFile); errors.Is(err, os.ErrNotExist) {
		wd, _ := os.Getwd()
		code := filepath.Join(wd, "code")
		if _, err := os.Stat(filepath.Join(code, "run.sh")); err != nil {
			return nil, nil, invalid("no %s here and no code/run.sh to make a one-module app from", c.AppFile)
		}
		name := filepath.Base(wd)
		yml := fmt.Sprintf("name: %s\nmodules:\n  %s:\n    arguments:\n      code_path: %q\n", name, name, code)
		spec, err := appspec.Parse("app.yaml", []byte(yml), nil)
		if err != nil {
			return nil, nil, &invalidError{err}
		}
		return &api.AppCreateRequest{YAML: yml, Filename: "app.yaml"}, spec, nil
	}
	args := AppFileArgs{File: c.AppFile, EnvFiles: c.EnvFiles}
	spec, data, vars, err := args.load()
	if err != nil {
		return nil, nil, err
	}
	req := &api.AppCreateRequest{YAML: string(data), Filename: filepath.Base(c.AppFile), Vars: vars, StartTasks: map[string][]string{}}
	for _, m := range spec.Modules {
		if len(m.StartTasks) > 0 {
			req.StartTasks[m.Name] = m.StartTasks
		}
	}
	return req, spec, nil
}

// startTasks are the arguments, else the lines of stdin when it is a pipe
// or a file.
func (c *RunCmd) startTasks() ([]string, error) {
	if len(c.Start) > 0 {
		return c.Start, nil
	}
	st, err := os.Stdin.Stat()
	if err != nil || st.Mode()&os.ModeCharDevice != 0 {
		return nil, nil
	}
	var out []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// startBroker starts scalebox-broker (next to this executable, else on
// PATH) on a free loopback port and waits until it answers.
func startBroker(ctx context.Context, db, logLevel string, stderr io.Writer) (func(), *api.Client, error) {
	bin := "scalebox-broker"
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), bin); fileExists(p) {
			bin = p
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	dbPath := expandHome(db)
	tokenFile := filepath.Join(filepath.Dir(dbPath), "token")
	cmd := exec.Command(bin, "--db", dbPath, "--listen", addr, "--token-file", tokenFile, "--log-level", logLevel)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			return nil, nil, fmt.Errorf("%s exited at start: %v", bin, err)
		default:
		}
		if api.NewClient(base, "").Healthz(ctx) == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, nil, fmt.Errorf("%s did not answer on %s", bin, base)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tok, _ := os.ReadFile(tokenFile)
	zap.L().Debug("started broker", zap.String("addr", base))
	return stop, api.NewClient(base, strings.TrimSpace(string(tok))), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
