package appspec

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// Defaults of typed module and app fields (spec §2.2–§2.5).
const (
	DefaultInitialStatus          = "RUNNING"
	DefaultTaskDistMode           = "DEFAULT"
	DefaultInitialTaskStatus      = "READY"
	DefaultTextTruncMode          = "HEAD"
	DefaultOutputTextSize         = 65535
	DefaultTaskBatchSize          = 1
	DefaultTaskGlobalTimeoutScale = 2.0
)

// Options say where Load finds template variables besides scalebox.env.
type Options struct {
	EnvFiles []string // --env-file values, applied in order (later wins); relative to the working directory
	Environ  []string // process environment "K=V"; nil means os.Environ(), empty means none
}

// App is a normalised application definition. It round-trips exactly
// through encoding/json.
type App struct {
	Name          string            `json:"name,omitempty"`
	Label         string            `json:"label,omitempty"`
	Version       string            `json:"version,omitempty"`
	Cluster       string            `json:"cluster,omitempty"`
	Comment       string            `json:"comment,omitempty"`
	InitialStatus string            `json:"initial_status"`        // RUNNING (default), INITIAL, PAUSED
	MainRouter    string            `json:"main_router,omitempty"` // parameters.main_router (old: message_router, default_message_router)
	Parameters    map[string]string `json:"parameters,omitempty"`  // app parameters, canonical keys, raw text after expansion
	Modules       []*Module         `json:"modules"`               // in file order
	// ClusterDefs holds the top-level clusters/specs/vcluster blocks as a
	// JSON object (e.g. {"vcluster":{…}}), kept raw; nil when absent.
	ClusterDefs json.RawMessage `json:"cluster_defs,omitempty"`
}

// Module returns the module called name, or nil.
func (a *App) Module(name string) *Module {
	for _, m := range a.Modules {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Module is one normalised module (Gen 1: job).
type Module struct {
	Name      string `json:"name"`
	Label     string `json:"label,omitempty"`
	Site      string `json:"site,omitempty"`    // HPC addition: bridge site running the slots
	Cluster   string `json:"cluster,omitempty"` // the app's cluster unless overridden
	BaseImage string `json:"base_image,omitempty"`
	Command   string `json:"command,omitempty"`   // slot start template
	CodePath  string `json:"code_path,omitempty"` // arguments.code_path; made absolute by Load
	Comment   string `json:"comment,omitempty"`

	Environments []string          `json:"environments,omitempty"` // "K=V"
	Arguments    map[string]string `json:"arguments,omitempty"`    // container side (old: variables); canonical keys, raw text
	Parameters   map[string]string `json:"parameters,omitempty"`   // server side; canonical keys, raw text
	Volumes      []string          `json:"volumes,omitempty"`      // old: paths
	Slots        []string          `json:"slots,omitempty"`        // old: hosts; see ParseSlot
	SinkModules  []string          `json:"sink_modules,omitempty"` // old: sink_jobs
	SinkVModules []string          `json:"sink_vmodules,omitempty"`

	TaskDistMode           string     `json:"task_dist_mode"` // DEFAULT, HOST-BOUND, SLOT-BOUND, GROUP-BOUND
	RetryRules             RetryRules `json:"retry_rules"`
	RetryBackoff           Backoff    `json:"retry_backoff"`
	TaskMaxSeconds         int        `json:"task_max_seconds,omitempty"` // 0 = no limit
	TaskMinSeconds         int        `json:"task_min_seconds,omitempty"`
	TaskBatchSize          int        `json:"task_batch_size"`
	TaskGlobalTimeoutScale float64    `json:"task_global_timeout_scale"`
	KeyGroupRegex          string     `json:"key_group_regex,omitempty"`
	InitialTaskStatus      string     `json:"initial_task_status"` // READY or INITIAL
	StartTasks             []string   `json:"start_tasks,omitempty"`
	OutputTextSize         int        `json:"output_text_size"`
	TextTruncMode          string     `json:"text_trunc_mode"` // HEAD (keep the tail) or TAIL
	PodID                  string     `json:"pod_id,omitempty"`
	Resources              Resources  `json:"resources"`
}

// Resources is what one slot of a module needs from a batch system (HPC
// addition, module key resources). Zero values mean "not specified".
type Resources struct {
	Cores           float64 `json:"cores,omitempty"`
	MemoryMB        int64   `json:"memory_mb,omitempty"`
	GPUs            int     `json:"gpus,omitempty"`
	ExpectedSeconds int     `json:"expected_seconds,omitempty"`
}

// SlotOnHead reports whether the module asks for exactly one slot on the
// head node, in any generation's spelling: argument slot_options containing
// slot_on_head (Gen 2), parameter slot_on_head: yes or schedule_mode: HEAD
// (Gen 1).
func (m *Module) SlotOnHead() bool {
	return m.HasSlotOption("slot_on_head") || isYes(m.Parameters["slot_on_head"]) || strings.EqualFold(m.Parameters[keyScheduleMode], "HEAD")
}

// HasSlotOption reports whether the module's slot_options (argument or
// parameter) list o, e.g. "disable_local_mapping".
func (m *Module) HasSlotOption(o string) bool {
	for _, v := range splitList(m.Arguments[keySlotOptions] + "," + m.Parameters[keySlotOptions]) {
		if v == o {
			return true
		}
	}
	return false
}

// ArgumentYes reports whether the module argument key is a Scalebox "yes"
// (yes, true, on, 1).
func (m *Module) ArgumentYes(key string) bool { return isYes(m.Arguments[key]) }

// Vars returns the template variables of the app file at path, lowest
// priority first: scalebox.env in its directory (if present), then
// opts.EnvFiles in order, then the process environment (opts.Environ, or
// os.Environ() when nil).
func Vars(path string, opts Options) (map[string]string, error) {
	vars := map[string]string{}
	files := opts.EnvFiles
	def := filepath.Join(filepath.Dir(path), "scalebox.env")
	switch _, err := os.Stat(def); {
	case err == nil:
		files = append([]string{def}, files...)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read env file: %w", err)
	}
	for _, f := range files {
		m, err := ReadEnvFile(f)
		if err != nil {
			return nil, err
		}
		for k, v := range m {
			vars[k] = v
		}
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			vars[k] = v
		}
	}
	return vars, nil
}

// Load reads the app file at path. Template variables come, lowest
// priority first, from scalebox.env in the app file's directory (if
// present), then opts.EnvFiles in order, then the process environment
// (opts.Environ, or os.Environ() when nil). Unlike Parse, Load expands
// start_task "FILE:<name>" (relative to the app file's directory, one task
// per non-empty line) and makes a relative code_path absolute against the
// app file's directory.
func Load(path string, opts Options) (*App, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read app file: %w", err)
	}
	vars, err := Vars(path, opts)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve app directory: %w", err)
	}
	return parse(path, data, vars, absDir)
}

// Parse parses app.yaml bytes. filename is only used in error messages;
// vars is the complete variable set. All problems found are returned as an
// ErrorList. start_task "FILE:<name>" is kept as is (see Load).
func Parse(filename string, data []byte, vars map[string]string) (*App, error) {
	return parse(filename, data, vars, "")
}

// parse implements Parse; a non-empty dir enables the file-relative parts
// of Load.
func parse(filename string, data []byte, vars map[string]string, dir string) (*App, error) {
	sch, err := appSchema()
	if err != nil {
		return nil, err
	}
	p := &parser{file: filename, vars: vars, budget: maxNodes, byPtr: map[string]*node{}}
	var doc yaml.Node
	src, protected := protectTemplates(data)
	if err := decodeYAML(src, &doc); err != nil {
		line, msg := yamlErrorLine(err)
		return nil, ErrorList{{File: filename, Line: line, Msg: unprotector.Replace(msg)}}
	}
	if protected {
		restoreTemplates(&doc, 0)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, ErrorList{{File: filename, Line: 1, Column: 1, Msg: "empty document: an app needs at least name and modules"}}
	}
	top := doc.Content[0]
	if deref(top) == nil || deref(top).Kind != yaml.MappingNode {
		return nil, ErrorList{{File: filename, Line: top.Line, Column: top.Column, Msg: "the document must be a mapping (name:, modules:, …)"}}
	}
	root := p.walk(top, nil, sch, "", "", 0)
	var app *App
	if root != nil && root.kind == yaml.MappingNode {
		bad := p.validate(sch, root.toAny())
		b := &builder{parser: p, bad: bad, dir: dir}
		app = b.app(root)
	}
	if len(p.errs) > 0 {
		sortErrors(p.errs)
		return nil, p.errs
	}
	return app, nil
}

// decodeYAML parses data into a node tree, turning a panic inside the YAML
// library into an error so that no input can crash the caller.
func decodeYAML(data []byte, doc *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse input: %v", r)
		}
	}()
	return yaml.Unmarshal(data, doc)
}

// yamlErrorLine extracts "line N" from a yaml.v3 error message.
func yamlErrorLine(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if _, scanErr := fmt.Sscanf(n, "%d", &line); scanErr == nil {
				msg = after
			}
		}
	}
	return line, "invalid YAML: " + msg
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// IsYes reports whether s is a Scalebox "yes" (yes, true, on, 1, y).
func IsYes(s string) bool { return isYes(s) }

func isYes(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "on", "1", "y":
		return true
	}
	return false
}
