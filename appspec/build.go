package appspec

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var moduleNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// maxSuggestCandidates bounds the work spent on "did you mean" hints.
const maxSuggestCandidates = 1000

// builder turns the checked node tree into an App, running the semantic
// checks. Values that already failed schema validation (bad) are skipped,
// so each problem is reported once.
type builder struct {
	*parser
	bad map[string]bool
	dir string // app directory for Load; "" for Parse
}

// failed reports whether n or anything below it failed schema validation.
func (b *builder) failed(n *node) bool {
	return n != nil && b.bad[n.ptr]
}

func (b *builder) fail(n *node, format string, args ...any) {
	b.errorf(n.pos(), n.path, format, args...)
}

// str returns the string value of member key of n ("" when unset).
func (b *builder) str(n *node, key string) string {
	c := n.child(key)
	if c.unset() || c.kind != yaml.ScalarNode {
		return ""
	}
	if s, ok := c.val.(string); ok {
		return s
	}
	return c.raw
}

// integer returns the integer value of member key of n, whether it was set
// and valid.
func (b *builder) integer(n *node, key string) (int, bool) {
	c := n.child(key)
	if c.unset() || b.failed(c) {
		return 0, false
	}
	var v int64
	switch x := c.val.(type) {
	case int64:
		v = x
	case float64:
		if x != math.Trunc(x) || math.Abs(x) > math.MaxInt32 {
			b.fail(c, "must be an integer, got %v", x)
			return 0, false
		}
		v = int64(x)
	default:
		b.fail(c, "must be an integer, got %q", c.raw)
		return 0, false
	}
	if v < 0 {
		b.fail(c, "must not be negative, got %d", v)
		return 0, false
	}
	if v > math.MaxInt32 {
		b.fail(c, "too large: %d", v)
		return 0, false
	}
	return int(v), true
}

func (b *builder) number(n *node, key string) (float64, bool) {
	c := n.child(key)
	if c.unset() || b.failed(c) {
		return 0, false
	}
	switch x := c.val.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	b.fail(c, "must be a number, got %q", c.raw)
	return 0, false
}

// strings returns the non-empty string items of a list member.
func (b *builder) strings(n *node, key string) []string {
	c := n.child(key)
	if c == nil || c.kind != yaml.SequenceNode {
		return nil
	}
	var out []string
	for _, it := range c.items {
		if it.kind == yaml.ScalarNode && it.raw != "" {
			out = append(out, it.raw)
		}
	}
	return out
}

// rawMap returns the members of a mapping as raw strings (nil if none).
func rawMap(n *node) map[string]string {
	if n == nil || n.kind != yaml.MappingNode || len(n.keys) == 0 {
		return nil
	}
	out := make(map[string]string, len(n.keys))
	for _, k := range n.keys {
		out[k] = n.m[k].rawString()
	}
	return out
}

func (b *builder) app(root *node) *App {
	app := &App{
		Name:    b.str(root, "name"),
		Label:   b.str(root, "label"),
		Version: b.str(root, "version"),
		Cluster: b.str(root, "cluster"),
		Comment: b.str(root, "comment"),
	}
	params := root.child(keyParameters)
	app.Parameters = rawMap(params)
	app.InitialStatus = cmpOr(b.str(params, "initial_status"), DefaultInitialStatus)
	app.MainRouter = b.str(params, keyMainRouter)
	app.ClusterDefs = b.clusterDefs(root)

	mods := root.child(keyModules)
	if mods == nil || mods.kind != yaml.MappingNode || len(mods.keys) == 0 {
		if mods == nil {
			b.errorf(root.y, "", "no modules: an app needs a modules: (old: jobs:) block with at least one module")
		} else if mods.kind == yaml.MappingNode || mods.unset() {
			b.fail(mods, "no modules: an app needs at least one module")
		}
		return app
	}
	for _, name := range mods.keys {
		mn := mods.m[name]
		if !moduleNameRE.MatchString(name) {
			b.errorf(mn.key, mn.path, "bad module name %q: use letters, digits, '_', '.' and '-' only", name)
		}
		if mn.kind != yaml.MappingNode {
			if mn.unset() {
				// "mod0:" with no body is a placeholder module.
				mn = &node{y: mn.y, key: mn.key, path: mn.path, ptr: mn.ptr, kind: yaml.MappingNode, m: map[string]*node{}}
			} else {
				continue // schema reported the type
			}
		}
		app.Modules = append(app.Modules, b.module(app, name, mn))
	}
	b.checkWiring(app, params, mods)
	return app
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// clusterDefs keeps the raw cluster blocks as one JSON object.
func (b *builder) clusterDefs(root *node) json.RawMessage {
	defs := map[string]any{}
	for _, k := range rawKeys {
		if c := root.child(k); !c.unset() {
			defs[k] = c.toAny()
		}
	}
	if len(defs) == 0 {
		return nil
	}
	out, err := json.Marshal(defs)
	if err != nil {
		b.errorf(root.y, "", "encode cluster definitions: %v", err)
		return nil
	}
	return out
}

func (b *builder) module(app *App, name string, mn *node) *Module {
	args, params := mn.child(keyArguments), mn.child(keyParameters)
	cluster := cmpOr(b.str(mn, "cluster"), app.Cluster)
	m := &Module{
		Name:  name,
		Label: b.str(mn, "label"),
		// A Scalebox cluster is where a module runs: a site here.
		Site:         cmpOr(b.str(mn, "site"), cluster),
		Cluster:      cluster,
		BaseImage:    b.str(mn, "base_image"),
		Command:      b.str(mn, "command"),
		CodePath:     b.str(args, keyCodePath),
		Comment:      b.str(mn, "comment"),
		Environments: b.strings(mn, keyEnvironments),
		Arguments:    rawMap(args),
		Parameters:   rawMap(params),
		Volumes:      b.strings(mn, "volumes"),
		Slots:        b.strings(mn, keySlots),
		SinkModules:  b.strings(mn, keySinkModules),
		SinkVModules: b.strings(mn, keySinkVModules),

		TaskDistMode:           cmpOr(b.str(params, "task_dist_mode"), DefaultTaskDistMode),
		TaskBatchSize:          DefaultTaskBatchSize,
		TaskGlobalTimeoutScale: DefaultTaskGlobalTimeoutScale,
		KeyGroupRegex:          b.str(params, "key_group_regex"),
		InitialTaskStatus:      cmpOr(b.str(params, "initial_task_status"), DefaultInitialTaskStatus),
		OutputTextSize:         DefaultOutputTextSize,
		TextTruncMode:          cmpOr(b.str(args, "text_trunc_mode"), DefaultTextTruncMode),
		PodID:                  b.str(params, "pod_id"),
	}
	// Gen-1 module-level schedule_mode is a placement parameter.
	if sm := mn.child(keyScheduleMode); !sm.unset() {
		if prev := m.Parameters[keyScheduleMode]; prev != "" && prev != sm.raw {
			b.fail(sm, "conflicts with parameters.schedule_mode %q", prev)
		} else {
			if m.Parameters == nil {
				m.Parameters = map[string]string{}
			}
			m.Parameters[keyScheduleMode] = sm.raw
		}
	}
	if m.CodePath != "" && b.dir != "" && !filepath.IsAbs(m.CodePath) {
		m.CodePath = filepath.Join(b.dir, m.CodePath)
	}
	m.TaskMaxSeconds = b.dual(args, params, "task_max_seconds", 0)
	m.TaskMinSeconds = b.dual(args, params, "task_min_seconds", 0)
	m.TaskBatchSize = b.dual(args, params, "task_batch_size", DefaultTaskBatchSize)
	if v, ok := b.integer(args, "output_text_size"); ok {
		m.OutputTextSize = v
	}
	if v, ok := b.number(params, "task_global_timeout_scale"); ok {
		m.TaskGlobalTimeoutScale = v
	}
	if rr := params.child(keyRetryRules); !rr.unset() && !b.failed(rr) {
		rules, err := ParseRetryRules(rr.rawString())
		if err != nil {
			b.fail(rr, "%v", err)
		}
		m.RetryRules = rules
	}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{{"retry_backoff", &m.RetryBackoff.Base}, {"retry_backoff_max", &m.RetryBackoff.Max}} {
		if c := params.child(d.key); !c.unset() && !b.failed(c) {
			v, err := ParseDuration(c.rawString())
			if err != nil {
				b.fail(c, "%v", err)
			}
			*d.dst = v
		}
	}
	if bo := m.RetryBackoff; bo.Max > 0 && bo.Max < bo.Base {
		b.fail(params.child("retry_backoff_max"), "%v is less than retry_backoff %v", bo.Max, bo.Base)
	}
	if c := params.child("key_group_regex"); !c.unset() && !b.failed(c) {
		if _, err := regexp.Compile(m.KeyGroupRegex); err != nil {
			b.fail(c, "bad regular expression: %v", err)
		}
	}
	for _, blk := range []*node{args, params} {
		if c := blk.child(keySlotOptions); !c.unset() && !b.failed(c) {
			for _, o := range splitList(c.raw) {
				if !contains(knownSlotOptions, o) {
					b.fail(c, "unknown slot option %q%s", o, suggest(o, knownSlotOptions))
				}
			}
		}
	}
	if c := mn.child(keySlots); c != nil && !b.failed(c) {
		for _, it := range c.items {
			if _, err := ParseSlot(it.raw); err != nil {
				b.fail(it, "%v", err)
			}
		}
	}
	m.StartTasks = b.startTasks(params.child(keyStartTask))
	m.Resources = b.resources(mn.child(keyResources))
	return m
}

// dual reads a value that Scalebox accepted both as an argument and as a
// parameter (task_max_seconds, task_min_seconds, task_batch_size and their
// old names). Both may be given if they agree.
func (b *builder) dual(args, params *node, key string, def int) int {
	a, aok := b.integer(args, key)
	p, pok := b.integer(params, key)
	switch {
	case aok && pok && a != p:
		b.fail(params.child(key), "%d conflicts with arguments.%s %d", p, key, a)
		return p
	case pok:
		return p
	case aok:
		return a
	}
	return def
}

// startTasks expands start_task: one body, a list of bodies, or
// FILE:<name> (under Load: one task per non-empty line of that file).
func (b *builder) startTasks(st *node) []string {
	if st.unset() || b.failed(st) {
		return nil
	}
	var items []*node
	if st.kind == yaml.SequenceNode {
		items = st.items
	} else {
		items = []*node{st}
	}
	var out []string
	for _, it := range items {
		body := it.raw
		name, isFile := strings.CutPrefix(body, "FILE:")
		if !isFile || b.dir == "" {
			if body != "" {
				out = append(out, body)
			}
			continue
		}
		name = strings.TrimSpace(name)
		if name == "" {
			b.fail(it, "FILE: needs a file name")
			continue
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(b.dir, name)
		}
		data, err := os.ReadFile(name)
		if err != nil {
			b.fail(it, "read start tasks: %v", err)
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, line)
			}
		}
	}
	return out
}

func (b *builder) resources(rn *node) Resources {
	var r Resources
	if rn == nil || rn.kind != yaml.MappingNode {
		return r
	}
	if v, ok := b.number(rn, "cores"); ok {
		r.Cores = v
	}
	if v, ok := b.integer(rn, "gpus"); ok {
		r.GPUs = v
	}
	if c := rn.child("memory"); !c.unset() && !b.failed(c) {
		if i, ok := c.val.(int64); ok {
			if i > maxMemoryMB {
				b.fail(c, "memory too large: %d MB", i)
			} else {
				r.MemoryMB = i
			}
		} else if mb, err := ParseMemoryMB(c.raw); err != nil {
			b.fail(c, "%v", err)
		} else {
			r.MemoryMB = mb
		}
	}
	if c := rn.child("expected_runtime"); !c.unset() && !b.failed(c) {
		if s, err := ParseDurationSeconds(c.raw); err != nil {
			b.fail(c, "%v", err)
		} else {
			r.ExpectedSeconds = s
		}
	}
	return r
}

// checkWiring checks the references between modules: the main router and
// every sink module must exist, and the explicit sink edges must not form
// a cycle.
//
// Cycle rule: an edge from a module to itself is allowed (Scalebox's
// features/retry_test sinks retry_test into itself to re-emit tasks), and
// edges into the main router never count, whether implicit (a module
// without sink_modules sends to the router) or written out: the router is
// the app's serial "main program" and routing results back to it is the
// normal control loop, not a pipeline cycle. Any other cycle among
// sink_modules edges would circulate tasks without an exit and is an
// error. sink_vmodules are logical (display, remote modules) and are not
// checked.
func (b *builder) checkWiring(app *App, params, mods *node) {
	names := make([]string, 0, len(app.Modules))
	exists := make(map[string]bool, len(app.Modules))
	for _, m := range app.Modules {
		names = append(names, m.Name)
		exists[m.Name] = true
	}
	if len(names) > maxSuggestCandidates {
		names = nil // too many to rank; no "did you mean"
	}
	if app.MainRouter != "" && !exists[app.MainRouter] {
		if c := params.child(keyMainRouter); c != nil && !b.failed(c) {
			b.fail(c, "main router %q is not a module of this app%s", app.MainRouter, suggest(app.MainRouter, names))
		}
	}
	edges := map[string][]string{}
	edgeNode := map[[2]string]*node{}
	for _, m := range app.Modules {
		sinks := mods.child(m.Name).child(keySinkModules)
		if sinks == nil || b.failed(sinks) {
			continue
		}
		for _, it := range sinks.items {
			to := it.raw
			if !exists[to] {
				b.fail(it, "unknown sink module %q%s", to, suggest(to, names))
				continue
			}
			if to == m.Name || to == app.MainRouter {
				continue
			}
			if _, dup := edgeNode[[2]string{m.Name, to}]; !dup {
				edges[m.Name] = append(edges[m.Name], to)
				edgeNode[[2]string{m.Name, to}] = it
			}
		}
	}
	// Depth-first search; every back edge closes one cycle.
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(string)
	visit = func(u string) {
		color[u] = grey
		stack = append(stack, u)
		for _, v := range edges[u] {
			switch color[v] {
			case white:
				visit(v)
			case grey:
				i := len(stack) - 1
				for stack[i] != v {
					i--
				}
				cycle := append(append([]string{}, stack[i:]...), v)
				b.fail(edgeNode[[2]string{u, v}], "sink modules form a cycle: %s", strings.Join(cycle, " → "))
			}
		}
		stack = stack[:len(stack)-1]
		color[u] = black
	}
	for _, n := range names {
		if color[n] == white {
			visit(n)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
