package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/container/agent"
	"github.com/scalebox-hpc/scalebox/internal/logging"
	"github.com/scalebox-hpc/scalebox/pilot"
)

// PilotRunCmd runs a pilot: the agent that leases and runs tasks.
type PilotRunCmd struct {
	AppID       int64         `name:"app-id" env:"SCALEBOX_APP_ID" required:"" help:"App whose modules this pilot serves."`
	Slots       []string      `help:"Slots per module, e.g. calc:4,router:1 (default: 1 for every module)." sep:","`
	Site        string        `env:"SCALEBOX_SITE" help:"Site this pilot belongs to (default local). Given, and without --slots, the pilot serves only the modules of this site and those naming none."`
	Host        string        `env:"SCALEBOX_HOST" help:"Host name reported to the broker (default: the machine's)."`
	Scratch     string        `env:"SCALEBOX_SCRATCH" help:"Parent of per-attempt work dirs (default: $SLURM_TMPDIR, $TMPDIR, /tmp)." type:"path"`
	KeepFailed  bool          `name:"keep-failed" help:"Keep the work dirs of failed attempts."`
	MaxIdle     time.Duration `name:"max-idle" default:"0s" help:"Exit after this long with nothing to do (0: never)."`
	Grace       time.Duration `default:"30s" help:"On SIGTERM/SIGINT, how long running tasks may finish before they are stopped and handed back."`
	ReportFlush time.Duration `default:"30s" help:"On stop, how long to keep trying to deliver results the broker could not take; the rest stay in the node's spool (<scratch>/scalebox/spool) for the next pilot there."`
	Prefetch    int           `help:"Tasks leased ahead per module beyond the free slots (default: adaptive, from one per slot up to what the slots run in 100 ms)."`
	Walltime    time.Duration `help:"Time this pilot may run (default: the Slurm/PBS job's own end, when inside one). It leases only tasks that can finish before it and drains --grace before it."`
	JobID       string        `name:"job-id" help:"Batch job id to report (default: detected from SLURM_*/PBS_*)."`
	LogLevel    string        `default:"info" help:"debug, info, warn or error."`

	ContainerFlags `embed:""`
}

// ContainerFlags say how a pilot runs modules that name a base_image.
type ContainerFlags struct {
	ContainerEngine string   `name:"container-engine" env:"SCALEBOX_CONTAINER_ENGINE" default:"none" enum:"none,apptainer,singularity,podman,docker" help:"How modules with a base_image run: none (on the host, the default), apptainer, singularity, podman or docker."`
	ContainerPath   string   `name:"container-path" help:"The engine's binary (default: found on PATH)."`
	ContainerMode   string   `name:"container-mode" default:"slot" enum:"slot,task" help:"slot: one container per slot, started once, tasks run through the slot agent inside it; task: one container per task."`
	ContainerFlag   []string `name:"container-flag" sep:"none" help:"Extra engine flag for every module, verbatim (repeatable; e.g. --container-flag=--userns)."`
	CleanEnv        bool     `name:"cleanenv" help:"Apptainer --cleanenv for every module."`
	ContainAll      bool     `name:"containall" help:"Apptainer --containall for every module."`
	WritableTmpfs   bool     `name:"writable-tmpfs" help:"Apptainer --writable-tmpfs for every module."`
	GPUVendor       string   `name:"gpu-vendor" default:"nvidia" enum:"nvidia,amd" help:"GPUs of this node, for modules with resources.gpus: nvidia (--nv, CUDA_VISIBLE_DEVICES) or amd (--rocm, ROCR_VISIBLE_DEVICES)."`
	ImageCache      string   `name:"image-cache" type:"path" help:"Node-local image cache (default <scratch>/scalebox/images)."`
	ImageCacheGB    float64  `name:"image-cache-gb" default:"20" help:"Size bound of the image cache, in GB (least recently used images are evicted)."`
	DataRoot        string   `name:"data-root" type:"path" help:"The site's shared data root, bound at /cluster_data_root (env CLUSTER_DATA_ROOT)."`
}

// config is the pilot's container configuration.
func (c *ContainerFlags) config() (pilot.ContainerConfig, error) {
	mode, err := container.ParseMode(c.ContainerMode)
	if err != nil {
		return pilot.ContainerConfig{}, invalid("--container-mode: %w", err)
	}
	return pilot.ContainerConfig{
		Engine: c.ContainerEngine, Path: c.ContainerPath, Mode: mode, Flags: c.ContainerFlag, GPU: c.GPUVendor,
		CleanEnv: c.CleanEnv, ContainAll: c.ContainAll, WritableTmpfs: c.WritableTmpfs,
		ImageCache: c.ImageCache, ImageCacheBytes: int64(c.ImageCacheGB * (1 << 30)), DataRoot: c.DataRoot,
	}, nil
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
	ctr, err := c.config()
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
		Scratch: c.Scratch, Keep: c.KeepFailed, MaxIdle: c.MaxIdle, Grace: c.Grace, ReportFlush: c.ReportFlush, Prefetch: c.Prefetch,
		Container: ctr, Log: log.Named("pilot"),
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

// SlotAgentCmd is the slot agent: the entrypoint of a slot container. It
// listens on a unix socket and runs the pilot's tasks inside the
// container; it exits when its stdin closes (the pilot is gone) or on
// SIGTERM.
type SlotAgentCmd struct {
	Socket string `required:"" help:"Unix socket to listen on (inside a dir bound from the host)."`
}

// Run serves until stdin closes.
func (c *SlotAgentCmd) Run(e *Env) error {
	return agent.Main(e.Ctx, c.Socket, e.Out, os.Stdin)
}

// PilotExplainBindsCmd prints the binds of an app's container modules.
type PilotExplainBindsCmd struct {
	AppID   int64  `name:"app-id" env:"SCALEBOX_APP_ID" required:"" help:"App whose modules to explain."`
	Module  string `help:"Only this module (default: every module with a base_image)."`
	Scratch string `env:"SCALEBOX_SCRATCH" help:"The pilots' scratch (default: $SLURM_TMPDIR, $TMPDIR, /tmp)." type:"path"`

	ContainerFlags `embed:""`
}

// Run prints one table per module.
func (c *PilotExplainBindsCmd) Run(e *Env) error {
	cfg, err := c.config()
	if err != nil {
		return err
	}
	a, err := e.Client.AppGet(e.Ctx, c.AppID)
	if err != nil {
		return err
	}
	scratch := c.Scratch
	if scratch == "" {
		scratch = pilot.DefaultScratch()
	}
	bin, _ := os.Executable()
	found := false
	for _, am := range a.Modules {
		var m appspec.Module
		if err := json.Unmarshal(am.Spec, &m); err != nil {
			return fmt.Errorf("module %s: decode definition: %w", am.Name, err)
		}
		if (c.Module != "" && am.Name != c.Module) || (c.Module == "" && m.BaseImage == "") {
			continue
		}
		found = true
		fmt.Fprintf(e.Out, "module %s (image %q, engine %s, mode %s):\n", am.Name, m.BaseImage, cfg.Engine, cfg.Mode)
		if err := pilot.ExplainBinds(e.Out, &m, a.ID, cfg, scratch, bin); err != nil {
			return invalid("%w", err)
		}
	}
	if !found {
		if c.Module != "" {
			return invalid("app %d has no module %q", a.ID, c.Module)
		}
		_, err := fmt.Fprintf(e.Out, "app %d: no module names a base_image; every module runs on the host\n", a.ID)
		return err
	}
	return nil
}
