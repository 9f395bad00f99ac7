package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/appspec"
)

// AppCmd groups app commands.
type AppCmd struct {
	Create      AppCreateCmd      `cmd:"" help:"Create an app from app.yaml."`
	Validate    AppValidateCmd    `cmd:"" help:"Check an app.yaml without creating it."`
	List        AppListCmd        `cmd:"" help:"List apps."`
	Show        AppShowCmd        `cmd:"" help:"Show an app with task counts per module."`
	Pause       AppActionCmd      `cmd:"" help:"Stop handing out the app's tasks."`
	Resume      AppActionCmd      `cmd:"" help:"Hand out the app's tasks again."`
	Cancel      AppActionCmd      `cmd:"" help:"Cancel the app: no more tasks are handed out."`
	SetFinished AppSetFinishedCmd `cmd:"" name:"set-finished" help:"Mark the app finished with a result text."`
}

// AppFileArgs name an app.yaml and its variables.
type AppFileArgs struct {
	File     string   `arg:"" optional:"" default:"app.yaml" help:"The app definition." type:"path"`
	EnvFiles []string `name:"env-file" short:"e" help:"Extra variable files (KEY=VALUE), after scalebox.env, before the environment." type:"path"`
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// load reads and validates the app locally; it returns the spec, the raw
// text and the variables the text refers to.
func (a *AppFileArgs) load() (*appspec.App, []byte, map[string]string, error) {
	data, err := os.ReadFile(a.File)
	if err != nil {
		return nil, nil, nil, &invalidError{fmt.Errorf("read app definition: %w", err)}
	}
	opts := appspec.Options{EnvFiles: a.EnvFiles, Environ: environ()}
	vars, err := appspec.Vars(a.File, opts)
	if err != nil {
		return nil, nil, nil, &invalidError{err}
	}
	spec, err := appspec.Load(a.File, opts)
	if err != nil {
		return nil, nil, nil, &invalidError{err}
	}
	used := map[string]string{}
	for _, m := range varRef.FindAllSubmatch(data, -1) {
		name := string(m[1])
		if v, ok := vars[name]; ok {
			used[name] = v
		}
	}
	return spec, data, used, nil
}

// AppValidateCmd validates an app.yaml.
type AppValidateCmd struct {
	AppFileArgs
}

// Run validates.
func (c *AppValidateCmd) Run(e *Env) error {
	spec, _, _, err := c.load()
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, spec)
	}
	names := make([]string, len(spec.Modules))
	for i, m := range spec.Modules {
		names[i] = m.Name
	}
	_, err = fmt.Fprintf(e.Out, "%s: app %q is valid: %d modules (%s)\n", c.File, spec.Name, len(spec.Modules), strings.Join(names, ", "))
	return err
}

// AppCreateCmd creates an app.
type AppCreateCmd struct {
	AppFileArgs
}

// Run creates the app and prints its id.
func (c *AppCreateCmd) Run(e *Env) error {
	spec, data, vars, err := c.load()
	if err != nil {
		return err
	}
	req := &api.AppCreateRequest{YAML: string(data), Filename: filepath.Base(c.File), Vars: vars, StartTasks: map[string][]string{}}
	for _, m := range spec.Modules {
		if len(m.StartTasks) > 0 {
			req.StartTasks[m.Name] = m.StartTasks
		}
	}
	a, err := e.Client.AppCreate(e.Ctx, req)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, map[string]int64{"app_id": a.ID})
	}
	_, err = fmt.Fprintf(e.Out, "app %d created: %s (%s, %d modules)\n", a.ID, a.Name, a.Status, len(a.Modules))
	return err
}

// AppListCmd lists apps.
type AppListCmd struct{}

// Run lists apps.
func (AppListCmd) Run(e *Env) error {
	apps, err := e.Client.AppList(e.Ctx)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, apps)
	}
	rows := make([][]string, len(apps))
	for i, a := range apps {
		rows[i] = []string{strconv.FormatInt(a.ID, 10), a.Name, a.Status, strconv.Itoa(len(a.Modules)),
			a.CreatedAt.Local().Format("2006-01-02 15:04:05"), a.Result}
	}
	return table(e.Out, "ID\tNAME\tSTATUS\tMODULES\tCREATED\tRESULT", rows)
}

// AppShowCmd shows an app.
type AppShowCmd struct {
	ID int64 `arg:"" help:"App id."`
}

// Run shows the app.
func (c *AppShowCmd) Run(e *Env) error {
	a, err := e.Client.AppGet(e.Ctx, c.ID)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, a)
	}
	return printApp(e, a)
}

func printApp(e *Env, a *api.App) error {
	fmt.Fprintf(e.Out, "app %d: %s\nstatus: %s\n", a.ID, a.Name, a.Status)
	if a.Result != "" {
		fmt.Fprintf(e.Out, "result: %s\n", a.Result)
	}
	rows := make([][]string, len(a.Modules))
	for i, m := range a.Modules {
		var parts []string
		keys := make([]string, 0, len(m.Counts))
		for k := range m.Counts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, m.Counts[k]))
		}
		site := m.Site
		if site == "" {
			site = "-"
		}
		rows[i] = []string{strconv.FormatInt(m.ID, 10), m.Name, site, strings.Join(parts, " ")}
	}
	return table(e.Out, "MODULE-ID\tMODULE\tSITE\tTASKS", rows)
}

// AppActionCmd pauses, resumes or cancels an app; the action is the
// command's own name.
type AppActionCmd struct {
	ID int64 `arg:"" help:"App id."`
}

// Run applies the action named by the command path.
func (c *AppActionCmd) Run(e *Env, k *kong.Context) error {
	action := strings.Fields(k.Command())[1]
	a, err := e.Client.AppAction(e.Ctx, c.ID, action)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, a)
	}
	_, err = fmt.Fprintf(e.Out, "app %d: %s\n", a.ID, a.Status)
	return err
}

// AppSetFinishedCmd marks an app finished, as Scalebox's
// `scalebox app set-finished` does from inside a module.
type AppSetFinishedCmd struct {
	AppID    int64  `name:"app-id" env:"APP_ID" help:"App id (default: $APP_ID)."`
	ModuleID int64  `name:"module-id" help:"Accepted for Scalebox compatibility; the app comes from --app-id/$APP_ID."`
	Result   string `arg:"" optional:"" help:"Result text."`
}

// Run marks the app finished.
func (c *AppSetFinishedCmd) Run(e *Env) error {
	if c.AppID == 0 {
		return invalid("no app: give --app-id or set APP_ID")
	}
	a, err := e.Client.AppSetFinished(e.Ctx, c.AppID, c.Result)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, a)
	}
	_, err = fmt.Fprintf(e.Out, "app %d: %s\n", a.ID, a.Status)
	return err
}
