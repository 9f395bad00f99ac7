package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/message"
)

// TaskCmd groups task commands.
type TaskCmd struct {
	Add  TaskAddCmd  `cmd:"" help:"Add tasks (messages) to a module."`
	List TaskListCmd `cmd:"" help:"List tasks."`
	Show TaskShowCmd `cmd:"" help:"Show a task with all its attempts."`

	Activate TaskActivateCmd `cmd:"" help:"Make INITIAL tasks READY (initial_task_status: INITIAL, dynamic scheduling)."`
}

// TaskActivateCmd makes INITIAL tasks dispatchable.
type TaskActivateCmd struct {
	AppID  int64   `name:"app-id" env:"APP_ID" required:"" help:"App id (default: $APP_ID)."`
	Module string  `help:"Only this module's tasks (default: every module)."`
	Limit  int     `help:"At most this many, oldest first (default: all)."`
	IDs    []int64 `arg:"" optional:"" name:"task-id" help:"Only these tasks."`
}

// Run activates and prints how many tasks became READY.
func (c *TaskActivateCmd) Run(e *Env) error {
	if c.Limit < 0 {
		return invalid("--limit must not be negative")
	}
	r, err := e.Client.TaskActivate(e.Ctx, c.AppID, &api.TaskActivateRequest{Module: c.Module, IDs: c.IDs, Limit: c.Limit})
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, r)
	}
	_, err = fmt.Fprintf(e.Out, "%d task(s) activated\n", r.Activated)
	return err
}

// addBatch is how many tasks go in one request.
const addBatch = 5000

// TaskAddCmd adds tasks, as Scalebox's `scalebox task add`.
type TaskAddCmd struct {
	AppID      int64    `name:"app-id" env:"APP_ID" help:"App id (default: $APP_ID)."`
	SinkModule string   `name:"sink-module" env:"SINK_MODULE" help:"Module the tasks go to (default: $SINK_MODULE, else the app's main router or first module)."`
	Header     []string `name:"header" short:"h" help:"A header k=v (repeatable)."`
	HeaderAlt  []string `name:"H" short:"H" hidden:"" help:"Same as -h."`
	Headers    string   `name:"headers" help:"Headers as a JSON object."`
	TaskFile   string   `name:"task-file" help:"Read tasks from a file, one message line each (the sink-tasks.txt forms); - for stdin." type:"path"`
	Conflict   string   `name:"conflict-action" env:"CONFLICT_ACTION" help:"IGNORE (default) or OVERWRITE an existing task with the same body."`
	Bodies     []string `arg:"" optional:"" help:"Task bodies."`
}

// Run adds the tasks.
func (c *TaskAddCmd) Run(e *Env) error {
	if c.AppID == 0 {
		return invalid("no app: give --app-id or set APP_ID")
	}
	common, err := c.headers()
	if err != nil {
		return err
	}
	var tasks []api.TaskInput
	for _, b := range c.Bodies {
		if b == "" {
			return invalid("empty task body")
		}
		tasks = append(tasks, api.TaskInput{Body: b, Headers: common})
	}
	if c.TaskFile != "" {
		f := os.Stdin
		name := "stdin"
		if c.TaskFile != "-" {
			if f, err = os.Open(c.TaskFile); err != nil {
				return invalid("open task file: %w", err)
			}
			defer f.Close()
			name = c.TaskFile
		}
		msgs, err := message.ParseAll(f, name)
		if err != nil {
			return &invalidError{err}
		}
		for _, m := range msgs {
			h := m.Headers
			if len(common) > 0 {
				merged := map[string]string{}
				for k, v := range common {
					merged[k] = v
				}
				for k, v := range h {
					merged[k] = v
				}
				h = merged
			}
			tasks = append(tasks, api.TaskInput{Module: m.Module, Body: m.Body, Headers: h})
		}
	}
	if len(tasks) == 0 {
		return invalid("no tasks: give bodies or --task-file")
	}
	var total api.TaskAddResponse
	for start := 0; start < len(tasks); start += addBatch {
		end := min(start+addBatch, len(tasks))
		res, err := e.Client.TaskAdd(e.Ctx, c.AppID, &api.TaskAddRequest{Module: c.SinkModule, Conflict: c.Conflict, Tasks: tasks[start:end]})
		if err != nil {
			if start > 0 {
				fmt.Fprintf(e.Err, "scalebox: %d of %d tasks were added before the error\n", start, len(tasks))
			}
			return err
		}
		total.Inserted += res.Inserted
		total.Duplicates += res.Duplicates
		total.IDs = append(total.IDs, res.IDs...)
	}
	if total.Duplicates > 0 && !e.JSON {
		fmt.Fprintf(e.Err, "scalebox: %d duplicate task(s) ignored (same body in the same module)\n", total.Duplicates)
	}
	if e.JSON {
		return printJSON(e.Out, total)
	}
	// Scalebox's output, which scripts parse.
	if len(tasks) == 1 && c.TaskFile == "" {
		_, err = fmt.Fprintf(e.Out, "{\"task_id\":%d}\n", total.IDs[0])
		return err
	}
	_, err = fmt.Fprintf(e.Out, "{\"num_tasks\":%d}\n", total.Inserted)
	return err
}

func (c *TaskAddCmd) headers() (map[string]string, error) {
	out := map[string]string{}
	if c.Headers != "" {
		h, err := message.Headers(c.Headers)
		if err != nil {
			return nil, invalid("--headers: %w", err)
		}
		out = h
	}
	for _, kv := range append(c.Header, c.HeaderAlt...) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, invalid("header %q: expected key=value", kv)
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// TaskListCmd lists tasks.
type TaskListCmd struct {
	AppID  int64  `name:"app-id" env:"APP_ID" help:"App id."`
	Module string `help:"Module name (needs --app-id)."`
	Status string `help:"Status: a code (e.g. -1, 0, 1) or READY, QUEUED, RUNNING, OK, INITIAL."`
	After  int64  `help:"Cursor: list tasks with ids after this."`
	Limit  int    `default:"100" help:"Page size."`
	All    bool   `help:"Follow the cursor to the end."`
}

var statusByName = map[string]int{"INITIAL": api.StatusInitial, "READY": api.StatusReady, "QUEUED": api.StatusQueued, "RUNNING": api.StatusRunning, "RETRY_WAIT": api.StatusRetryWait, "OK": api.StatusOK}

// Run lists tasks.
func (c *TaskListCmd) Run(e *Env) error {
	p := api.TaskListParams{AppID: c.AppID, Module: c.Module, After: c.After, Limit: c.Limit}
	if c.Status != "" {
		s, ok := statusByName[strings.ToUpper(c.Status)]
		if !ok {
			n, err := strconv.Atoi(c.Status)
			if err != nil {
				return invalid("--status %q: a code or READY, QUEUED, RUNNING, OK, INITIAL", c.Status)
			}
			s = n
		}
		p.Status = &s
	}
	var all []api.Task
	var next int64
	for {
		page, err := e.Client.TaskList(e.Ctx, p)
		if err != nil {
			return err
		}
		all = append(all, page.Tasks...)
		next = page.Next
		if !c.All || page.Next == 0 {
			break
		}
		p.After = page.Next
	}
	if e.JSON {
		return printJSON(e.Out, api.TaskList{Tasks: all, Next: next})
	}
	rows := make([][]string, len(all))
	for i, t := range all {
		rows[i] = []string{strconv.FormatInt(t.ID, 10), strconv.FormatInt(t.AppID, 10), t.Module, t.StatusName,
			strconv.Itoa(t.Attempts), truncate(t.Body, 60)}
	}
	if err := table(e.Out, "ID\tAPP\tMODULE\tSTATUS\tATTEMPTS\tBODY", rows); err != nil {
		return err
	}
	if next != 0 && !c.All {
		fmt.Fprintf(e.Err, "more: --after %d\n", next)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// TaskShowCmd shows a task.
type TaskShowCmd struct {
	ID int64 `arg:"" help:"Task id."`
}

// Run shows the task and its attempts.
func (c *TaskShowCmd) Run(e *Env) error {
	d, err := e.Client.TaskGet(e.Ctx, c.ID)
	if err != nil {
		return err
	}
	if e.JSON {
		return printJSON(e.Out, d)
	}
	t := d.Task
	hj, _ := json.Marshal(t.Headers)
	fmt.Fprintf(e.Out, "task %d (app %d, module %s)\nbody: %s\nheaders: %s\nstatus: %s\nattempts: %d (module failures %d, infrastructure failures %d)\n",
		t.ID, t.AppID, t.Module, t.Body, hj, t.StatusName, t.Attempts, t.AppFailures, t.InfraFailures)
	for _, a := range d.Attempts {
		fmt.Fprintf(e.Out, "\n#%d %s on %s (pilot %d) exit=%d code=%d", a.Attempt, a.Kind, orDash(a.Host), a.PilotID, a.ExitCode, a.Code)
		if a.ProgramStart != nil && a.ProgramEnd != nil {
			fmt.Fprintf(e.Out, " ran %s", a.ProgramEnd.Sub(*a.ProgramStart))
		}
		fmt.Fprintln(e.Out)
		if a.Reason != "" {
			fmt.Fprintf(e.Out, "  reason: %s\n", a.Reason)
		}
		if line := containerLine(a.Extra); line != "" {
			fmt.Fprintf(e.Out, "  container: %s\n", line)
		}
		for _, s := range []struct{ name, text string }{{"stdout", a.Stdout}, {"stderr", a.Stderr}, {"custom", a.CustomText}} {
			if s.text != "" {
				fmt.Fprintf(e.Out, "  %s: %s\n", s.name, strings.ReplaceAll(strings.TrimRight(s.text, "\n"), "\n", "\n    "))
			}
		}
	}
	return nil
}

// containerLine renders an attempt's container record (extra.container).
func containerLine(extra map[string]any) string {
	c, ok := extra["container"].(map[string]any)
	if !ok {
		return ""
	}
	str := func(k string) string { v, _ := c[k].(string); return v }
	out := fmt.Sprintf("%s per %s, image %s", str("engine"), str("mode"), str("image"))
	if d := str("image_digest"); d != "" {
		out += " (" + d + ")"
	}
	if n := str("name"); n != "" {
		out += ", name " + n
	}
	for _, k := range []string{"start", "ready", "stop"} {
		if v := str(k); v != "" {
			out += ", " + k + " " + v
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
