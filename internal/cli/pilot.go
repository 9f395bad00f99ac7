package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/internal/logging"
	"github.com/scalebox-hpc/scalebox/pilot"
)

// PilotRunCmd runs a pilot: the agent that leases and runs tasks.
type PilotRunCmd struct {
	AppID      int64         `name:"app-id" env:"SCALEBOX_APP_ID" required:"" help:"App whose modules this pilot serves."`
	Slots      []string      `help:"Slots per module, e.g. calc:4,router:1 (default: 1 for every module)." sep:","`
	Site       string        `env:"SCALEBOX_SITE" help:"Site this pilot belongs to (default local). Given, and without --slots, the pilot serves only the modules of this site and those naming none."`
	Host       string        `env:"SCALEBOX_HOST" help:"Host name reported to the broker (default: the machine's)."`
	Scratch    string        `env:"SCALEBOX_SCRATCH" help:"Parent of per-attempt work dirs (default: $SLURM_TMPDIR, $TMPDIR, /tmp)." type:"path"`
	KeepFailed bool          `name:"keep-failed" help:"Keep the work dirs of failed attempts."`
	MaxIdle    time.Duration `name:"max-idle" default:"0s" help:"Exit after this long with nothing to do (0: never)."`
	Grace      time.Duration `default:"30s" help:"On SIGTERM/SIGINT, how long running tasks may finish before they are stopped and handed back."`
	Prefetch   int           `help:"Tasks leased ahead per module beyond the free slots (default: the module's slots)."`
	Walltime   time.Duration `help:"Time this pilot may run (default: the Slurm/PBS job's own end, when inside one). It leases only tasks that can finish before it and drains --grace before it."`
	JobID      string        `name:"job-id" help:"Batch job id to report (default: detected from SLURM_*/PBS_*)."`
	LogLevel   string        `default:"info" help:"debug, info, warn or error."`
}

// parseSlots parses "module:n" items.
func parseSlots(items []string) (map[string]int, error) {
	out := map[string]int{}
	for _, it := range items {
		it = strings.TrimSpace(it)
		if it == "" {
			continue
		}
		name, n, ok := strings.Cut(it, ":")
		count := 1
		if ok {
			var err error
			if count, err = strconv.Atoi(n); err != nil || count <= 0 {
				return nil, invalid("--slots %q: want module:count with a positive count", it)
			}
		}
		out[name] += count
	}
	return out, nil
}

// Run runs the pilot until it is stopped or idle.
func (c *PilotRunCmd) Run(e *Env, g *Globals) error {
	slots, err := parseSlots(c.Slots)
	if err != nil {
		return err
	}
	log, err := logging.New(c.LogLevel, "console")
	if err != nil {
		return invalid("%w", err)
	}
	defer func() { _ = log.Sync() }()
	cfg := pilot.Config{
		Broker: g.Broker, Token: e.Client.Token(), Site: c.Site, Host: c.Host, AppID: c.AppID, Slots: slots,
		Scratch: c.Scratch, Keep: c.KeepFailed, MaxIdle: c.MaxIdle, Grace: c.Grace, Prefetch: c.Prefetch,
		Log: log.Named("pilot"),
	}
	if c.Walltime > 0 {
		cfg.Deadline = time.Now().Add(c.Walltime)
	}
	cfg.JobID = c.JobID
	if alloc, ok, err := pilot.DetectAllocation(e.Ctx); ok {
		if cfg.JobID == "" {
			cfg.JobID = string(alloc.JobID) // array tasks' ids name their index

		}
		if cfg.Deadline.IsZero() && !alloc.End.IsZero() {
			cfg.Deadline = alloc.End
		}
		if err != nil {
			log.Warn("batch job detected, but not its walltime: " + err.Error())
		}
	}
	stats, err := pilot.Run(e.Ctx, cfg)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, map[string]int64{"leased": stats.Leased.Load(), "succeeded": stats.Succeeded.Load(),
			"failed": stats.Failed.Load(), "fenced": stats.Fenced.Load()})
	}
	_, err = fmt.Fprintf(e.Out, "pilot done: %d leased, %d succeeded, %d failed\n",
		stats.Leased.Load(), stats.Succeeded.Load(), stats.Failed.Load())
	return err
}
