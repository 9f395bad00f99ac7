package pilot

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/scalebox-hpc/scalebox/appspec"
	"github.com/scalebox-hpc/scalebox/container"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
	"github.com/scalebox-hpc/scalebox/singularity"
)

// ContainerConfig says how a pilot runs the modules that name a
// base_image. With no engine they run on the host, as modules without an
// image do: an existing Scalebox app.yaml then runs unchanged wherever its
// scripts are reachable through code_path.
type ContainerConfig struct {
	Engine string         // "" or "none" (host), "apptainer", "singularity", "podman", "docker"
	Path   string         // the engine's binary; "" = looked up on PATH
	Mode   container.Mode // PerSlot (default) or PerTask
	Flags  []string       // extra engine flags for every module, verbatim (e.g. --userns, --no-privs)
	GPU    string         // GPU vendor of this node for modules with resources.gpus: container.GPUNvidia (default) or GPUAMD

	CleanEnv, ContainAll, WritableTmpfs bool // Apptainer flags for every module (modules may add them too)

	ImageCache      string // node-local Apptainer image cache (default <scratch>/scalebox/images)
	ImageCacheBytes int64  // its size bound (default 20 GiB)

	// DataRoot is the site's shared data root, bound at /cluster_data_root.
	DataRoot string
}

// Enabled reports whether modules with a base_image run in containers.
func (c *ContainerConfig) Enabled() bool {
	e := strings.ToLower(strings.TrimSpace(c.Engine))
	return e != "" && e != "none"
}

// Container paths of Scalebox's standard binds.
const (
	workTarget      = "/work"
	localDataTarget = "/local_data_root"
	dataRootTarget  = "/cluster_data_root"
	codeTarget      = "/app/bin"
	containerPath   = "/.scalebox/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	proxyTarget     = "unix://" + container.RunDirTarget + "/" + proxySocket
	defaultCacheGiB = 20
)

// containers is a pilot's container machinery: the engine and, for
// Apptainer, the node-local image cache.
type containers struct {
	cfg    ContainerConfig
	engine container.Engine
	cache  *singularity.Cache                            // Apptainer/Singularity
	remove func(context.Context, string) error           // podman/docker
	digest func(context.Context, string) (string, error) // podman/docker
}

// newContainers detects the configured engine.
func newContainers(ctx context.Context, cfg ContainerConfig, scratch string) (*containers, error) {
	mode, err := container.ParseMode(string(cfg.Mode))
	if err != nil {
		return nil, err
	}
	cfg.Mode = mode
	c := &containers{cfg: cfg}
	switch e := strings.ToLower(strings.TrimSpace(cfg.Engine)); e {
	case "apptainer", "singularity":
		path := cfg.Path
		if path == "" {
			if p, err := exec.LookPath(e); err == nil {
				path = p
			}
		}
		tool, err := singularity.Detect(ctx, singularity.Config{Path: path})
		if err != nil {
			return nil, fmt.Errorf("container engine %s: %w", e, err)
		}
		dir := cfg.ImageCache
		if dir == "" {
			dir = filepath.Join(scratch, "scalebox", "images")
		}
		size := cfg.ImageCacheBytes
		if size == 0 {
			size = defaultCacheGiB << 30
		}
		if c.cache, err = singularity.NewCache(dir, size, tool); err != nil {
			return nil, err
		}
		c.engine = tool
	case container.FlavorPodman, container.FlavorDocker:
		path := cfg.Path
		if path == "" {
			p, err := exec.LookPath(e)
			if err != nil {
				return nil, fmt.Errorf("container engine %s: not found on PATH", e)
			}
			path = p
		}
		oci, err := container.NewOCI(e, path)
		if err != nil {
			return nil, err
		}
		c.engine, c.remove, c.digest = oci, oci.Remove, oci.ImageDigest
	default:
		return nil, fmt.Errorf("container engine %q: want none, apptainer, singularity, podman or docker", cfg.Engine)
	}
	return c, nil
}

// boxed reports whether module m runs in a container on this pilot.
func (p *Pilot) boxed(m *module) bool {
	return p.ctr != nil && m.spec.BaseImage != ""
}

// Binds computes the binds of a module's container (spec §2.3 volumes):
// the slot's work dir at /work, the app's node-local data dir at
// /local_data_root, the site's data root at /cluster_data_root, the
// module's code_path at /app/bin (read-only), the module's volumes, and
// the pilot's own run dir and binary under /.scalebox. slot_options
// disable_local_mapping and disable_data_mapping drop the data binds.
// They are not yet checked: container.Plan does that.
func Binds(m *appspec.Module, cfg ContainerConfig, workDir, localData, runDir, binary string) ([]container.Bind, error) {
	binds := []container.Bind{{Source: workDir, Target: workTarget, Why: "work dir (WORK_DIR)"}}
	if localData != "" && !m.HasSlotOption("disable_local_mapping") {
		binds = append(binds, container.Bind{Source: localData, Target: localDataTarget, Why: "node-local data dir of the app"})
	}
	if cfg.DataRoot != "" && !m.HasSlotOption("disable_data_mapping") {
		binds = append(binds, container.Bind{Source: cfg.DataRoot, Target: dataRootTarget, Why: "site data_root"})
	}
	for _, d := range codeDirs(m) {
		binds = append(binds, container.Bind{Source: d, Target: codeTarget, ReadOnly: true, Why: "arguments.code_path"})
	}
	for i, v := range m.Volumes {
		b, err := container.ParseVolume(v, fmt.Sprintf("volumes[%d]", i))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Name, err)
		}
		binds = append(binds, b)
	}
	if runDir != "" {
		binds = append(binds, container.Bind{Source: runDir, Target: container.RunDirTarget, Why: "pilot run dir (proxy and slot agent sockets)"})
	}
	if binary != "" {
		binds = append(binds, container.Bind{Source: binary, Target: container.AgentBinaryTarget, ReadOnly: true, Why: "scalebox binary (slot agent and CLI)"})
	}
	return binds, nil
}

// codeDirs is the module's code_path dir on the host: CodePath (made
// absolute by appspec.Load), else the argument as written.
func codeDirs(m *appspec.Module) []string {
	for _, d := range []string{m.CodePath, m.Arguments["code_path"]} {
		if d != "" {
			return []string{d}
		}
	}
	return nil
}

// boxSlot is one slot's container runtime. It is prepared (image staged,
// binds planned) on first use and again after a failure, so a broken
// image or a missing bind source fails the attempts with a clear error
// and the pilot keeps serving.
type boxSlot struct {
	p    *Pilot
	m    *module
	slot int
	dir  string // host dir bound at /work
	mode container.Mode

	mu     sync.Mutex
	rt     *container.Runtime
	binds  container.Binds
	staged *singularity.Staged
}

var _ executor.Runtime = (*boxSlot)(nil)

func (p *Pilot) newBoxSlot(m *module, slot int, dir string, mode container.Mode) *boxSlot {
	return &boxSlot{p: p, m: m, slot: slot, dir: dir, mode: mode}
}

// Name implements executor.Runtime.
func (b *boxSlot) Name() string { return b.p.ctr.engine.Name() }

// Run implements executor.Runtime.
func (b *boxSlot) Run(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	rt, err := b.ensure(ctx)
	if err != nil {
		return nil, err
	}
	return rt.Run(ctx, s)
}

// ensure prepares the runtime once.
func (b *boxSlot) ensure(ctx context.Context) (*container.Runtime, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rt != nil {
		return b.rt, nil
	}
	p, m, c := b.p, b.m, b.p.ctr
	image, digest := m.spec.BaseImage, ""
	if c.cache != nil {
		st, err := c.cache.Stage(ctx, image)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.name, err)
		}
		image, digest, b.staged = st.Path, st.Digest, st
	} else if c.digest != nil {
		digest, _ = c.digest(ctx, image) // "" when the run is going to pull it
	}
	fail := func(err error) (*container.Runtime, error) {
		_ = b.staged.Release()
		b.staged = nil
		return nil, err
	}
	localData, err := p.appDataDir(m.appID)
	if err != nil {
		return fail(err)
	}
	raw, err := Binds(m.spec, c.cfg, b.dir, localData, p.runDir(), p.cfg.CLIPath)
	if err != nil {
		return fail(err)
	}
	if b.binds, err = container.Plan(raw); err != nil {
		return fail(fmt.Errorf("module %s: binds: %w", m.name, err))
	}
	flags := append(append([]string(nil), c.cfg.Flags...), strings.Fields(m.spec.Arguments["container_flags"])...)
	spec := container.Spec{
		Image: image, Binds: []container.Bind(b.binds), Flags: flags,
		Network:       strings.EqualFold(m.spec.Arguments["network"], "host"),
		CleanEnv:      c.cfg.CleanEnv || m.spec.ArgumentYes("cleanenv"),
		ContainAll:    c.cfg.ContainAll || m.spec.ArgumentYes("containall"),
		WritableTmpfs: c.cfg.WritableTmpfs || m.spec.ArgumentYes("writable_tmpfs"),
	}
	if m.spec.Resources.GPUs > 0 {
		spec.GPU = c.cfg.GPU
		if spec.GPU == "" {
			spec.GPU = container.GPUNvidia
		}
	}
	n := p.boxSeq.Add(1)
	b.rt = &container.Runtime{
		Engine: c.engine, Base: spec, Mode: b.mode, Remove: c.remove, Digest: digest,
		ContainerName:     fmt.Sprintf("sb-p%d-%s-%d", p.id.Load(), containerName(m.name), n),
		AgentSocket:       filepath.Join(p.runDir(), "a"+strconv.FormatInt(n, 10)+".sock"),
		AgentSocketTarget: container.RunDirTarget + "/a" + strconv.FormatInt(n, 10) + ".sock",
		EngineEnv:         singularity.StripContainerEnv(os.Environ()),
	}
	return b.rt, nil
}

// lastRun is the container record of the latest attempt.
func (b *boxSlot) lastRun(res *executor.Result) *container.Run {
	b.mu.Lock()
	rt, staged := b.rt, b.staged
	b.mu.Unlock()
	if rt == nil {
		return nil
	}
	run := rt.LastRun(res)
	run.Image = b.m.spec.BaseImage
	if staged != nil {
		run.ImageID = staged.ID
	}
	return run
}

// close stops the slot's container and releases its image.
func (b *boxSlot) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rt != nil {
		_ = b.rt.Close()
	}
	if err := b.staged.Release(); err != nil {
		b.p.log.Warn("release image", zap.Error(err))
	}
	b.rt, b.staged = nil, nil
}

// containerName keeps the characters podman and docker allow in names.
func containerName(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			return r
		}
		return '_'
	}, s)
}

// runDir holds the pilot's sockets: its proxy's and its slot agents'.
func (p *Pilot) runDir() string { return p.runPath }

// maxRunDir keeps socket paths within the kernel's 108 bytes (sun_path)
// with room for "/a<n>.sock".
const maxRunDir = 90

// makeRunDir creates the run dir: <scratch dir>/run, or a dir in /tmp when
// the scratch path is too long for unix sockets.
func (p *Pilot) makeRunDir() error {
	dir := filepath.Join(p.dir, "run")
	if len(dir) > maxRunDir {
		d, err := os.MkdirTemp("/tmp", "scalebox-run-")
		if err != nil {
			return fmt.Errorf("pilot run dir: %w", err)
		}
		p.runPath = d
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pilot run dir: %w", err)
	}
	p.runPath = dir
	return nil
}

// containerEnv is the part of the pilot's environment a container gets:
// host paths that mean nothing inside (PATH, TMPDIR, PWD, the loader's
// variables) and the container engines' own variables are left out; PATH
// is the image's standard one behind the scalebox CLI. HOME is /root in
// podman and docker; Apptainer sets it to the host's itself, and refuses
// it as a container variable, so a container per task does not pass it
// (the slot agent does, with the value Apptainer gives it).
func containerEnv(oci bool, mode container.Mode) []string {
	env := []string{"PATH=" + containerPath, "TMPDIR=/tmp"}
	for _, kv := range singularity.StripContainerEnv(os.Environ()) {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH", k == "TMPDIR", k == "PWD", k == "OLDPWD", k == "SHLVL", k == "_", k == "UID", k == "GID",
			strings.HasPrefix(k, "LD_"), k == "CONTAINERS_CONF",
			strings.HasPrefix(k, "APPTAINER_"), strings.HasPrefix(k, "SINGULARITY_"):
			continue
		case k == "HOME" && (oci || mode == container.PerTask):
			continue
		}
		env = append(env, kv)
	}
	if oci {
		env = append(env, "HOME=/root")
	}
	return env
}

// setupContainers detects the container engine when a module this pilot
// serves has a base_image and an engine is configured.
func (p *Pilot) setupContainers(ctx context.Context) error {
	var images []string
	for _, m := range p.modules {
		if m.spec.BaseImage != "" {
			images = append(images, m.name+"="+m.spec.BaseImage)
		}
	}
	if len(images) == 0 {
		return nil
	}
	if !p.cfg.Container.Enabled() {
		p.log.Info("modules with a base_image run on the host: no container engine configured (pilot run --container-engine)",
			zap.Strings("modules", images))
		return nil
	}
	c, err := newContainers(ctx, p.cfg.Container, p.cfg.Scratch)
	if err != nil {
		return err
	}
	p.ctr = c
	p.log.Info("modules run in containers", zap.String("engine", c.engine.Name()), zap.String("mode", string(c.cfg.Mode)),
		zap.Strings("modules", images))
	return nil
}

// oci reports whether the engine is podman or docker.
func (c *containers) oci() bool { return c.remove != nil }

// hostPathFunc maps a path as module m sees it to the host: through its
// container binds (work dir = dir) for a module with an image.
func (p *Pilot) hostPathFunc(m *module, dir string) func(string) string {
	if !p.boxed(m) {
		return func(s string) string { return s }
	}
	localData, _ := p.appDataDir(m.appID)
	binds, err := Binds(m.spec, p.ctr.cfg, dir, localData, "", "")
	if err != nil {
		return func(s string) string { return s }
	}
	return func(s string) string { return toHost(binds, s) }
}

// toHost maps a container path to the host through the deepest bind whose
// target holds it; a path under no bind is returned as is.
func toHost(binds []container.Bind, cpath string) string {
	cpath = path.Clean(cpath)
	best, bestLen := cpath, -1
	for _, b := range binds {
		target := path.Clean(b.Target)
		rel, ok := strings.CutPrefix(cpath, target)
		if target == "/" || !ok || (rel != "" && !strings.HasPrefix(rel, "/")) || len(target) <= bestLen {
			continue
		}
		best, bestLen = filepath.Join(b.Source, rel), len(target)
	}
	return best
}

// ExplainBinds writes the binds a pilot with cfg would give the slot
// containers of module m of app appID, with the reason for each (scalebox
// pilot explain-binds). Bind sources that are missing on this machine are
// reported together, as a pilot would report them before a run.
func ExplainBinds(w io.Writer, m *appspec.Module, appID int64, cfg ContainerConfig, scratch, binary string) error {
	tmp, err := os.MkdirTemp("", "scalebox-explain-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	work, run, data := filepath.Join(tmp, "work"), filepath.Join(tmp, "run"), filepath.Join(tmp, "data")
	for _, d := range []string{work, run, data} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	show := strings.NewReplacer(
		work, filepath.Join(scratch, "scalebox", "pilot-<id>", "slot-"+safeName(m.Name)+"-<n>"),
		run, filepath.Join(scratch, "scalebox", "pilot-<id>", "run"),
		data, filepath.Join(scratch, "scalebox", "data", "app-"+strconv.FormatInt(appID, 10)))
	raw, err := Binds(m, cfg, work, data, run, binary)
	if err != nil {
		return err
	}
	binds, err := container.Plan(raw)
	if err != nil {
		return fmt.Errorf("module %s: %s", m.Name, show.Replace(err.Error()))
	}
	var b strings.Builder
	if err := binds.Explain(&b); err != nil {
		return err
	}
	_, err = io.WriteString(w, show.Replace(b.String()))
	return err
}
