package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/pbs"
	"github.com/scalebox-hpc/scalebox/site"
	"github.com/scalebox-hpc/scalebox/slurm"
)

// SiteCmd groups site commands.
type SiteCmd struct {
	Put    SitePutCmd    `cmd:"" help:"Register or replace a site from its YAML definition."`
	List   SiteListCmd   `cmd:"" help:"List sites."`
	Show   SiteShowCmd   `cmd:"" help:"Show a site's definition and its provisioning state."`
	Submit SiteSubmitCmd `cmd:"" help:"Submit pilots to a batch site now (one job array), through the broker's provisioner."`
}

// SiteSubmitCmd submits pilots.
type SiteSubmitCmd struct {
	Name  string `arg:"" help:"Registered site name."`
	AppID int64  `name:"app-id" env:"APP_ID" required:"" help:"App the pilots serve."`
	Count int    `default:"1" help:"Pilots: more than one makes a job array."`
}

// Run submits.
func (c *SiteSubmitCmd) Run(e *Env) error {
	j, err := e.Client.SiteSubmit(e.Ctx, c.Name, &api.SiteSubmitRequest{AppID: c.AppID, Count: c.Count})
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, j)
	}
	_, err = fmt.Fprintf(e.Out, "pilot job %d: %s job %s, %d pilot(s) for app %d\n", j.ID, j.Site, j.JobID, j.Count, j.AppID)
	return err
}

// SitePutCmd registers a site.
type SitePutCmd struct {
	File string `arg:"" help:"Site definition (YAML)." type:"path"`
}

// Run validates and registers the site.
func (c *SitePutCmd) Run(e *Env) error {
	s, err := site.Load(c.File)
	if err != nil {
		return &invalidError{err}
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return err
	}
	out, err := e.Client.SitePut(e.Ctx, &api.Site{Name: s.Name, Kind: s.Kind, Spec: spec})
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, out)
	}
	_, err = fmt.Fprintf(e.Out, "site %s (%s) registered\n", out.Name, out.Kind)
	return err
}

// SiteListCmd lists sites.
type SiteListCmd struct{}

// Run lists.
func (SiteListCmd) Run(e *Env) error {
	ss, err := e.Client.SiteList(e.Ctx)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, ss)
	}
	rows := make([][]string, len(ss))
	for i, s := range ss {
		var sp site.Spec
		_ = json.Unmarshal(s.Spec, &sp)
		rows[i] = []string{s.Name, s.Kind, orDash(sp.Broker), orDash(sp.Scheduler.Partition + sp.Scheduler.Queue)}
	}
	return table(e.Out, "NAME\tKIND\tBROKER\tPARTITION/QUEUE", rows)
}

// SiteShowCmd shows a site.
type SiteShowCmd struct {
	Name string `arg:""`
}

// Run shows the site.
func (c *SiteShowCmd) Run(e *Env) error {
	s, err := e.Client.SiteGet(e.Ctx, c.Name)
	if err != nil {
		return err
	}
	return printJSON(e.Out, s)
}

// PilotScriptCmd prints the batch script of a site's pilots, ready for
// sbatch or qsub.
type PilotScriptCmd struct {
	Site  string `required:"" help:"Registered site name (or a site YAML file path)."`
	AppID int64  `name:"app-id" env:"APP_ID" required:"" help:"App the pilots serve."`
	Count int    `default:"1" help:"Pilots: more than one makes a job array."`
}

// Run prints the script.
func (c *PilotScriptCmd) Run(e *Env) error {
	var s *site.Spec
	if st, err := os.Stat(c.Site); err == nil && !st.IsDir() {
		if s, err = site.Load(c.Site); err != nil {
			return &invalidError{err}
		}
	} else {
		got, err := e.Client.SiteGet(e.Ctx, c.Site)
		if err != nil {
			return err
		}
		if s, err = site.Parse("site "+c.Site, got.Spec); err != nil {
			return err
		}
	}
	j, err := s.JobSpec(c.AppID, c.Count)
	if err != nil {
		return &invalidError{err}
	}
	var sched batch.Scheduler
	switch strings.ToLower(s.Kind) {
	case "slurm":
		sched = slurm.New(batch.Exec{})
	case "pbs":
		sched = pbs.New(batch.Exec{})
	}
	return sched.Render(e.Out, j)
}
