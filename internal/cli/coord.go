package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/scalebox-hpc/scalebox/api"
)

// AppScope names the app a semaphore or variable belongs to.
type AppScope struct {
	AppID int64 `name:"app-id" env:"APP_ID" help:"App id (default: $APP_ID)."`
}

func (s AppScope) app() (int64, error) {
	if s.AppID == 0 {
		return 0, invalid("no app: give --app-id or set APP_ID")
	}
	return s.AppID, nil
}

// SemaphoreCmd groups semaphore commands (Scalebox's `scalebox semaphore`).
type SemaphoreCmd struct {
	Create     SemaCreateCmd `cmd:"" help:"Create a semaphore: NAME VALUE, or a JSON object {\"semaphores\":{...}}."`
	Get        SemaGetCmd    `cmd:"" help:"Print a semaphore's value."`
	List       SemaListCmd   `cmd:"" help:"List semaphores by name prefix."`
	Set        SemaSetCmd    `cmd:"" help:"Set a semaphore's value."`
	Increment  SemaAddCmd    `cmd:"" help:"Add 1."`
	Decrement  SemaAddCmd    `cmd:"" help:"Subtract 1."`
	IncrementN SemaAddNCmd   `cmd:"" name:"increment-n" help:"Add N (may be negative)."`
}

// SemaCreateCmd creates semaphores.
type SemaCreateCmd struct {
	AppScope
	Conflict string   `name:"conflict-action" env:"CONFLICT_ACTION" help:"IGNORE (error if it exists, default) or OVERWRITE."`
	Args     []string `arg:"" help:"NAME VALUE, or one JSON object."`
}

// Run creates the semaphores.
func (c *SemaCreateCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	req := api.SemaphoreCreateRequest{Conflict: c.Conflict}
	switch {
	case len(c.Args) == 1 && strings.HasPrefix(strings.TrimSpace(c.Args[0]), "{"):
		if err := json.Unmarshal([]byte(c.Args[0]), &req); err != nil {
			return invalid("semaphore JSON: %w", err)
		}
		req.Conflict = c.Conflict
	case len(c.Args) == 2:
		v, err := strconv.ParseInt(c.Args[1], 10, 64)
		if err != nil {
			return invalid("semaphore value %q is not an integer", c.Args[1])
		}
		req.Semaphores = map[string]int64{c.Args[0]: v}
	default:
		return invalid("expected NAME VALUE or a JSON object")
	}
	return e.Client.SemaphoreCreate(e.Ctx, app, &req)
}

// SemaGetCmd prints a semaphore.
type SemaGetCmd struct {
	AppScope
	Name string `arg:""`
}

// Run prints the value.
func (c *SemaGetCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	s, err := e.Client.SemaphoreGet(e.Ctx, app, c.Name)
	if err != nil {
		return err
	}
	return printSema(e, s)
}

func printSema(e *Env, s *api.Semaphore) error {
	if e.JSON {
		return printJSON(e.Out, s)
	}
	_, err := fmt.Fprintln(e.Out, s.Value)
	return err
}

// SemaListCmd lists semaphores.
type SemaListCmd struct {
	AppScope
	Prefix string `arg:"" optional:""`
}

// Run lists.
func (c *SemaListCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	ss, err := e.Client.SemaphoreList(e.Ctx, app, c.Prefix)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, ss)
	}
	rows := make([][]string, len(ss))
	for i, s := range ss {
		rows[i] = []string{s.Name, strconv.FormatInt(s.Value, 10)}
	}
	return table(e.Out, "NAME\tVALUE", rows)
}

// SemaSetCmd sets a semaphore.
type SemaSetCmd struct {
	AppScope
	Name  string `arg:""`
	Value int64  `arg:""`
}

// Run sets.
func (c *SemaSetCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	s, err := e.Client.SemaphoreSet(e.Ctx, app, c.Name, c.Value)
	if err != nil {
		return err
	}
	return printSema(e, s)
}

// autoCreate is Scalebox's SEMAPHORE_AUTO_CREATE=yes.
func autoCreate() bool {
	v := strings.ToLower(os.Getenv("SEMAPHORE_AUTO_CREATE"))
	return v == "yes" || v == "true" || v == "1"
}

// SemaAddCmd adds ±1; the sign comes from the command name.
type SemaAddCmd struct {
	AppScope
	Name string `arg:""`
}

// Run increments or decrements.
func (c *SemaAddCmd) Run(e *Env, k *kong.Context) error {
	delta := int64(1)
	if strings.Fields(k.Command())[1] == "decrement" {
		delta = -1
	}
	app, err := c.app()
	if err != nil {
		return err
	}
	s, err := e.Client.SemaphoreIncrement(e.Ctx, app, c.Name, delta, autoCreate())
	if err != nil {
		return err
	}
	return printSema(e, s)
}

// SemaAddNCmd adds N.
type SemaAddNCmd struct {
	AppScope
	Name  string `arg:""`
	Delta int64  `arg:""`
}

// Run adds N.
func (c *SemaAddNCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	s, err := e.Client.SemaphoreIncrement(e.Ctx, app, c.Name, c.Delta, autoCreate())
	if err != nil {
		return err
	}
	return printSema(e, s)
}

// VariableCmd groups variable commands.
type VariableCmd struct {
	Get  VarGetCmd  `cmd:"" help:"Print a variable."`
	Set  VarSetCmd  `cmd:"" help:"Create or replace a variable."`
	List VarListCmd `cmd:"" help:"List variables by name prefix."`
}

// VarGetCmd prints a variable.
type VarGetCmd struct {
	AppScope
	Name string `arg:""`
}

// Run prints.
func (c *VarGetCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	v, err := e.Client.VariableGet(e.Ctx, app, c.Name)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, v)
	}
	_, err = fmt.Fprintln(e.Out, v.Value)
	return err
}

// VarSetCmd sets a variable.
type VarSetCmd struct {
	AppScope
	Name  string `arg:""`
	Value string `arg:""`
}

// Run sets.
func (c *VarSetCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	v, err := e.Client.VariableSet(e.Ctx, app, c.Name, c.Value)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, v)
	}
	return nil
}

// VarListCmd lists variables.
type VarListCmd struct {
	AppScope
	Prefix string `arg:"" optional:""`
}

// Run lists.
func (c *VarListCmd) Run(e *Env) error {
	app, err := c.app()
	if err != nil {
		return err
	}
	vs, err := e.Client.VariableList(e.Ctx, app, c.Prefix)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, vs)
	}
	rows := make([][]string, len(vs))
	for i, v := range vs {
		rows[i] = []string{v.Name, v.Value}
	}
	return table(e.Out, "NAME\tVALUE", rows)
}

// PilotCmd groups pilot commands.
type PilotCmd struct {
	Run     PilotRunCmd     `cmd:"" help:"Run a pilot: lease and run tasks of an app's modules on this machine."`
	Script  PilotScriptCmd  `cmd:"" help:"Print a site's pilot batch script, ready for sbatch or qsub."`
	List    PilotListCmd    `cmd:"" help:"List pilots."`
	Drain   PilotDrainCmd   `cmd:"" help:"Ask a pilot to take no more work."`
	Release PilotReleaseCmd `cmd:"" help:"Lift a pilot's quarantine (its node is repaired): its host is no longer left out of the site's pilot jobs."`
	Cancel  PilotCancelCmd  `cmd:"" help:"Cancel a pilot's batch job (or, with --job, a whole pilot job); its unfinished tasks go back as infrastructure failures."`
	Jobs    PilotJobsCmd    `cmd:"" help:"List the batch jobs submitted to run pilots, with the scheduler's state and message."`

	ExplainBinds PilotExplainBindsCmd `cmd:"" name:"explain-binds" help:"Show the binds a pilot would give the containers of an app's modules, and why."`
}

// PilotCancelCmd cancels a pilot's batch job.
type PilotCancelCmd struct {
	ID  int64 `arg:"" help:"Pilot id (or, with --job, pilot job id as 'pilot jobs' lists it)."`
	Job bool  `help:"ID is a pilot job: cancel all its pilots."`
}

// Run cancels.
func (c *PilotCancelCmd) Run(e *Env) error {
	if c.Job {
		j, err := e.Client.PilotJobCancel(e.Ctx, c.ID)
		if err != nil {
			return err
		}
		if e.JSON {
			return printJSON(e.Out, j)
		}
		_, err = fmt.Fprintf(e.Out, "pilot job %d (%s job %s) cancelled\n", j.ID, j.Site, j.JobID)
		return err
	}
	p, err := e.Client.PilotCancel(e.Ctx, c.ID)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, p)
	}
	_, err = fmt.Fprintf(e.Out, "pilot %d (%s job %s) cancelled\n", p.ID, p.Site, p.JobID)
	return err
}

// PilotJobsCmd lists pilot jobs.
type PilotJobsCmd struct {
	Site   string `help:"Only jobs of this site."`
	AppID  int64  `name:"app-id" help:"Only jobs serving this app."`
	Active bool   `help:"Only jobs that have not ended."`
}

// Run lists.
func (c *PilotJobsCmd) Run(e *Env) error {
	js, err := e.Client.PilotJobList(e.Ctx, c.Site, c.AppID, c.Active)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, js)
	}
	rows := make([][]string, len(js))
	for i, j := range js {
		rows[i] = []string{strconv.FormatInt(j.ID, 10), j.Site, strconv.FormatInt(j.AppID, 10), orDash(j.JobID),
			strconv.Itoa(j.Count), j.State, orDash(j.Native), j.SubmittedAt.Local().Format("2006-01-02 15:04:05"), orDash(j.Reason)}
	}
	return table(e.Out, "ID\tSITE\tAPP\tJOB\tPILOTS\tSTATE\tNATIVE\tSUBMITTED\tREASON", rows)
}

// PilotListCmd lists pilots.
type PilotListCmd struct{}

// Run lists pilots.
func (PilotListCmd) Run(e *Env) error {
	ps, err := e.Client.PilotList(e.Ctx)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, ps)
	}
	rows := make([][]string, len(ps))
	for i, p := range ps {
		rows[i] = []string{strconv.FormatInt(p.ID, 10), p.Site, p.Host, p.Status, orDash(p.JobID),
			p.LastSeen.Local().Format("2006-01-02 15:04:05")}
	}
	return table(e.Out, "ID\tSITE\tHOST\tSTATUS\tJOB\tLAST-SEEN", rows)
}

// PilotReleaseCmd lifts quarantines.
type PilotReleaseCmd struct {
	IDs []int64 `arg:"" name:"id" help:"QUARANTINED pilots (scalebox pilot list shows them)."`
}

// Run releases.
func (c *PilotReleaseCmd) Run(e *Env) error {
	for _, id := range c.IDs {
		var p api.Pilot
		if err := e.Client.Do(e.Ctx, "POST", "/pilots/"+strconv.FormatInt(id, 10)+"/release", nil, &p); err != nil {
			return err
		}
		fmt.Fprintf(e.Out, "pilot %d on %s: %s\n", p.ID, p.Host, p.Status)
	}
	return nil
}

// PilotDrainCmd drains a pilot.
type PilotDrainCmd struct {
	ID int64 `arg:""`
}

// Run drains.
func (c *PilotDrainCmd) Run(e *Env) error {
	return e.Client.Do(e.Ctx, "POST", "/pilots/"+strconv.FormatInt(c.ID, 10)+"/drain", nil, nil)
}

// TokenCmd groups token commands.
type TokenCmd struct {
	Create TokenCreateCmd `cmd:"" help:"Create a token; its secret is printed once."`
}

// TokenCreateCmd creates a token.
type TokenCreateCmd struct {
	Role string `required:"" enum:"admin,user,pilot" help:"admin, user or pilot."`
	Site string `help:"For pilot tokens: the only site they may act for."`
	Name string `help:"A label."`
}

// Run creates the token.
func (c *TokenCreateCmd) Run(e *Env) error {
	t, err := e.Client.TokenCreate(e.Ctx, &api.TokenRequest{Role: c.Role, Site: c.Site, Name: c.Name})
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, t)
	}
	_, err = fmt.Fprintln(e.Out, t.Token)
	return err
}
