// Package site reads site definitions (where pilots run: a Slurm partition,
// a PBS queue, this host) and turns them into pilot batch jobs.
//
//	name: hpc1
//	kind: slurm
//	broker: http://login01:8080          # as the compute nodes see it
//	scheduler: {partition: cpu, account: proj42, extra: ["--mail-type=NONE"]}
//	pilot: {binary: /home/u/bin/scalebox, cores: 8, memory: 16G, walltime: 2h, slots: {calc: 8}}
//	limits: {max_pilots: 20, max_queued: 4}
package site

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/batch"
	"github.com/scalebox-hpc/scalebox/schema"
)

// Spec is a site definition.
type Spec struct {
	Name      string    `json:"name" yaml:"name"`
	Kind      string    `json:"kind" yaml:"kind"`
	Broker    string    `json:"broker,omitempty" yaml:"broker"`
	Scheduler Scheduler `json:"scheduler,omitzero" yaml:"scheduler"`
	Pilot     Pilot     `json:"pilot,omitzero" yaml:"pilot"`
	Limits    Limits    `json:"limits,omitzero" yaml:"limits"`
}

// Scheduler holds the batch scheduler's options.
type Scheduler struct {
	Partition  string   `json:"partition,omitempty" yaml:"partition"`
	Queue      string   `json:"queue,omitempty" yaml:"queue"`
	Account    string   `json:"account,omitempty" yaml:"account"`
	QOS        string   `json:"qos,omitempty" yaml:"qos"`
	Constraint string   `json:"constraint,omitempty" yaml:"constraint"`
	Exclusive  bool     `json:"exclusive,omitempty" yaml:"exclusive"`
	Extra      []string `json:"extra,omitempty" yaml:"extra"`
}

// Pilot is the shape of one pilot job.
type Pilot struct {
	Binary   string            `json:"binary,omitempty" yaml:"binary"`
	Nodes    int               `json:"nodes,omitempty" yaml:"nodes"`
	Cores    int               `json:"cores,omitempty" yaml:"cores"`
	Memory   string            `json:"memory,omitempty" yaml:"memory"`
	GPUs     int               `json:"gpus,omitempty" yaml:"gpus"`
	Walltime string            `json:"walltime,omitempty" yaml:"walltime"`
	Grace    string            `json:"grace,omitempty" yaml:"grace"`
	MaxIdle  string            `json:"max_idle,omitempty" yaml:"max_idle"`
	Scratch  string            `json:"scratch,omitempty" yaml:"scratch"`
	Slots    map[string]int    `json:"slots,omitempty" yaml:"slots"`
	Env      map[string]string `json:"env,omitempty" yaml:"env"`
	// Container says how the pilots run modules with a base_image.
	Container Container `json:"container,omitzero" yaml:"container"`
}

// Container is a site's container engine settings (pilot run --container-*).
type Container struct {
	Engine        string   `json:"engine,omitempty" yaml:"engine"`
	Path          string   `json:"path,omitempty" yaml:"path"`
	Mode          string   `json:"mode,omitempty" yaml:"mode"`
	Flags         []string `json:"flags,omitempty" yaml:"flags"`
	CleanEnv      bool     `json:"cleanenv,omitempty" yaml:"cleanenv"`
	ContainAll    bool     `json:"containall,omitempty" yaml:"containall"`
	WritableTmpfs bool     `json:"writable_tmpfs,omitempty" yaml:"writable_tmpfs"`
	GPU           string   `json:"gpu,omitempty" yaml:"gpu"`
	ImageCache    string   `json:"image_cache,omitempty" yaml:"image_cache"`
	ImageCacheGB  float64  `json:"image_cache_gb,omitempty" yaml:"image_cache_gb"`
	DataRoot      string   `json:"data_root,omitempty" yaml:"data_root"`
}

// Args are the pilot run flags of these settings.
func (c *Container) Args() []string {
	var out []string
	for _, f := range []struct{ flag, v string }{{"--container-engine", c.Engine}, {"--container-path", c.Path},
		{"--container-mode", c.Mode}, {"--gpu-vendor", c.GPU}, {"--image-cache", c.ImageCache}, {"--data-root", c.DataRoot}} {
		if f.v != "" {
			out = append(out, f.flag, f.v)
		}
	}
	if c.ImageCacheGB > 0 {
		out = append(out, "--image-cache-gb", strconv.FormatFloat(c.ImageCacheGB, 'f', -1, 64))
	}
	for _, f := range c.Flags {
		out = append(out, "--container-flag="+f)
	}
	for _, b := range []struct {
		flag string
		on   bool
	}{{"--cleanenv", c.CleanEnv}, {"--containall", c.ContainAll}, {"--writable-tmpfs", c.WritableTmpfs}} {
		if b.on {
			out = append(out, b.flag)
		}
	}
	return out
}

// Limits bound the pilots of a site.
type Limits struct {
	MaxPilots   int    `json:"max_pilots,omitempty" yaml:"max_pilots"`
	MaxQueued   int    `json:"max_queued,omitempty" yaml:"max_queued"`
	MinPilots   int    `json:"min_pilots,omitempty" yaml:"min_pilots"`
	IdleTimeout string `json:"idle_timeout,omitempty" yaml:"idle_timeout"`
	MaxInflight int    `json:"max_inflight,omitempty" yaml:"max_inflight"` // tasks leased to the site's pilots at once, all modules (0 = no limit)
}

// Load reads and validates a site file.
func Load(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read site definition: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a site definition against schema/site.schema.json (errors
// name the file, line and key) and checks its values.
func Parse(filename string, data []byte) (*Spec, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	var doc any
	if err := root.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	doc = stringKeys(doc)
	sch, err := compiled()
	if err != nil {
		return nil, err
	}
	if err := sch.Validate(doc); err != nil {
		return nil, schemaError(filename, &root, err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	return &s, nil
}

func (s *Spec) check() error {
	for _, d := range []struct{ key, v string }{{"pilot.walltime", s.Pilot.Walltime}, {"pilot.grace", s.Pilot.Grace},
		{"pilot.max_idle", s.Pilot.MaxIdle}, {"limits.idle_timeout", s.Limits.IdleTimeout}} {
		if d.v == "" {
			continue
		}
		if _, err := appspec.ParseDurationSeconds(d.v); err != nil {
			return fmt.Errorf("%s: %w", d.key, err)
		}
	}
	if s.Pilot.Memory != "" {
		if _, err := appspec.ParseMemoryMB(s.Pilot.Memory); err != nil {
			return fmt.Errorf("pilot.memory: %w", err)
		}
	}
	if (s.Kind == "slurm" || s.Kind == "pbs") && s.Broker == "" {
		return fmt.Errorf("broker: a %s site needs the broker address as the compute nodes see it", s.Kind)
	}
	return nil
}

// compiled is the site schema, compiled once.
var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.SiteSchema()))
	if err != nil {
		return nil, fmt.Errorf("load site schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schema.SiteSchemaURL, doc); err != nil {
		return nil, err
	}
	sch, err := c.Compile(schema.SiteSchemaURL)
	if err != nil {
		return nil, fmt.Errorf("compile site schema: %w", err)
	}
	return sch, nil
})

// schemaError names the line of the first offending key.
func schemaError(filename string, root *yaml.Node, err error) error {
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return fmt.Errorf("%s: %w", filename, err)
	}
	leaf := ve
	for len(leaf.Causes) > 0 {
		leaf = leaf.Causes[0]
	}
	path := leaf.InstanceLocation
	line := lineOf(root, path)
	msg := strings.TrimSpace(fmt.Sprint(leaf.ErrorKind))
	return fmt.Errorf("%s:%d: %s: %s", filename, line, strings.Join(path, "."), msg)
}

func lineOf(root *yaml.Node, path []string) int {
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, key := range path {
		found := false
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					line, n, found = n.Content[i].Line, n.Content[i+1], true
					break
				}
			}
		}
		if !found {
			break
		}
	}
	return line
}

func stringKeys(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = stringKeys(e)
		}
		return x
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[fmt.Sprint(k)] = stringKeys(e)
		}
		return out
	case []any:
		for i := range x {
			x[i] = stringKeys(x[i])
		}
		return x
	case int:
		return json.Number(strconv.Itoa(x))
	}
	return v
}

// JobSpec is the batch job of count pilots serving app appID on this site.
func (s *Spec) JobSpec(appID int64, count int) (*batch.JobSpec, error) {
	if s.Kind != "slurm" && s.Kind != "pbs" {
		return nil, fmt.Errorf("site %s is %q: only slurm and pbs sites run pilots as batch jobs", s.Name, s.Kind)
	}
	bin := s.Pilot.Binary
	if bin == "" {
		bin = "scalebox"
	}
	cmd := []string{bin, "--broker", s.Broker, "pilot", "run", "--app-id", strconv.FormatInt(appID, 10), "--site", s.Name}
	if len(s.Pilot.Slots) > 0 {
		var items []string
		for m, n := range s.Pilot.Slots {
			items = append(items, m+":"+strconv.Itoa(n))
		}
		slices.Sort(items)
		cmd = append(cmd, "--slots", strings.Join(items, ","))
	}
	maxIdle := s.Pilot.MaxIdle
	if maxIdle == "" {
		// An idle pilot retires itself: the site's idle timeout.
		maxIdle = s.Limits.IdleTimeout
	}
	for _, f := range []struct{ flag, v string }{{"--grace", s.Pilot.Grace}, {"--max-idle", maxIdle}, {"--scratch", s.Pilot.Scratch}} {
		if f.v == "" {
			continue
		}
		v := f.v
		if f.flag != "--scratch" {
			secs, _ := appspec.ParseDurationSeconds(v)
			v = (time.Duration(secs) * time.Second).String()
		}
		cmd = append(cmd, f.flag, v)
	}
	cmd = append(cmd, s.Pilot.Container.Args()...)
	j := &batch.JobSpec{
		Name: "scalebox-" + s.Name, Queue: s.Scheduler.Partition, Account: s.Scheduler.Account, QOS: s.Scheduler.QOS,
		Nodes: s.Pilot.Nodes, TasksPerNode: 1, CoresPerTask: s.Pilot.Cores, GPUs: s.Pilot.GPUs,
		Constraint: s.Scheduler.Constraint, Exclusive: s.Scheduler.Exclusive, Extra: s.Scheduler.Extra,
		Env: s.Pilot.Env, Command: cmd,
	}
	if s.Kind == "pbs" && s.Scheduler.Queue != "" {
		j.Queue = s.Scheduler.Queue
	}
	if count > 1 {
		j.ArraySize = count
	}
	if s.Pilot.Memory != "" {
		j.MemoryMB, _ = appspec.ParseMemoryMB(s.Pilot.Memory)
	}
	if s.Pilot.Walltime != "" {
		secs, _ := appspec.ParseDurationSeconds(s.Pilot.Walltime)
		j.Walltime = time.Duration(secs) * time.Second
		// Slurm sends SIGUSR1 this long before the end; the pilot drains on it.
		// A twentieth of the walltime, 1–10 minutes, but never more than a
		// quarter of a short job.
		j.SignalMargin = min(max(j.Walltime/20, time.Minute), 10*time.Minute, j.Walltime/4)
	}
	return j, nil
}
