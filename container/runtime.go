package container

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/scalebox-hpc/scalebox/container/agent"
	"github.com/scalebox-hpc/scalebox/pilot/executor"
)

// Mode says how a Runtime starts containers.
type Mode string

const (
	// PerSlot starts one container per slot, once, running the slot agent;
	// each task is a fork/exec inside it. The default.
	PerSlot Mode = "slot"
	// PerTask starts a container for every task ("apptainer exec",
	// "podman run --rm"), the fallback where an agent cannot run.
	PerTask Mode = "task"
)

// ParseMode reads a mode name; "" is PerSlot.
func ParseMode(s string) (Mode, error) {
	switch Mode(strings.ToLower(strings.TrimSpace(s))) {
	case "", PerSlot:
		return PerSlot, nil
	case PerTask:
		return PerTask, nil
	}
	return "", fmt.Errorf("container mode %q: want %q or %q", s, PerSlot, PerTask)
}

// Where the pilot's files appear inside a slot container.
const (
	AgentBinaryTarget = "/.scalebox/bin/scalebox" // the pilot's own binary (the slot agent and the scalebox CLI)
	RunDirTarget      = "/.scalebox/run"          // the pilot's run dir: its proxy socket and the agents' sockets
)

// Runtime runs the programs of one slot in containers of one image. It
// implements executor.Runtime; the Spec it is given is already in the
// container's terms (argv, env and dir as the program sees them inside).
//
// In PerSlot mode the slot's container is started on the first Run and
// restarted on the next Run if it died; Close stops it. In PerTask mode
// every Run is a foreground container run of its own.
type Runtime struct {
	Engine Engine
	Base   Spec // image, binds, GPU, network and flags; Name, Argv, Env and Dir are set per run
	Mode   Mode
	// ContainerName names the slot's container (podman/docker); PerTask
	// runs add "-<n>". It must be unique on the node.
	ContainerName string
	// AgentSocket is the host path of the slot agent's socket, inside the
	// host dir bound at RunDirTarget; AgentSocketTarget is the same file
	// inside the container. PerSlot only.
	AgentSocket, AgentSocketTarget string
	// Remove, if set, force-removes a container by name after a run that
	// was cut (timeout, cancellation) or a slot container that did not stop:
	// killing a podman or docker client does not always stop its container.
	Remove func(ctx context.Context, name string) error
	// EngineEnv is the environment of the engine process (nil: the pilot's
	// own).
	EngineEnv []string
	// StartTimeout bounds the start of the slot container up to its
	// agent's ready line (the engine may pull the image); default 10 min.
	StartTimeout time.Duration
	// Digest is the image's content digest, for the attempt record.
	Digest string

	seq atomic.Int64

	mu   sync.Mutex
	slot *slotContainer // PerSlot: the running container, nil before the first Run and after it died
	runs map[*slotContainer]int
	done bool
}

var _ executor.Runtime = (*Runtime)(nil)

// Name implements executor.Runtime: the engine's name.
func (r *Runtime) Name() string { return r.Engine.Name() }

// Run implements executor.Runtime.
func (r *Runtime) Run(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	if len(s.Argv) == 0 {
		return nil, errors.New("run program: empty argv")
	}
	if r.Mode == PerTask {
		return r.runTask(ctx, s)
	}
	c, err := r.acquire(ctx)
	if err != nil {
		return nil, err
	}
	res, err := (agent.Client{Socket: r.AgentSocket}).Run(ctx, s)
	r.release(c, res == nil && ctx.Err() == nil)
	if res == nil && err != nil && ctx.Err() == nil {
		if why := c.exitReason(); why != "" {
			err = fmt.Errorf("%w (the slot container ended: %s)", err, why)
		}
	}
	return res, err
}

// Run is one container run's record for the task perspective.
type Run struct {
	Engine      string     `json:"engine"`
	Mode        Mode       `json:"mode"`
	Image       string     `json:"image"`
	ImageDigest string     `json:"image_digest,omitempty"`
	ImageID     string     `json:"image_id,omitempty"` // a SIF's UUID
	Name        string     `json:"name,omitempty"`
	Start       time.Time  `json:"start"`           // the engine was started
	Ready       *time.Time `json:"ready,omitempty"` // PerSlot: the agent answered
	Stop        *time.Time `json:"stop,omitempty"`  // PerTask: the engine exited
}

// LastRun describes the container the latest Run used: in PerSlot mode
// the slot's container (no stop yet while it runs), in PerTask mode the
// run's own, whose start and stop are res.Start and res.End.
func (r *Runtime) LastRun(res *executor.Result) *Run {
	run := &Run{Engine: r.Engine.Name(), Mode: r.Mode, Image: r.Base.Image, ImageDigest: r.Digest}
	if r.Mode == PerTask {
		if res != nil && !res.Start.IsZero() {
			run.Start = res.Start
			end := res.End
			run.Stop = &end
		}
		return run
	}
	r.mu.Lock()
	c := r.slot
	r.mu.Unlock()
	if c != nil {
		run.Name, run.Start = c.name, c.start
		ready := c.ready
		run.Ready = &ready
	}
	return run
}

// runTask runs s in a container of its own.
func (r *Runtime) runTask(ctx context.Context, s executor.Spec) (*executor.Result, error) {
	cs := r.Base
	cs.Argv, cs.Env, cs.Dir = s.Argv, s.Env, s.Dir
	if r.ContainerName != "" {
		cs.Name = fmt.Sprintf("%s-%d", r.ContainerName, r.seq.Add(1))
	}
	argv, env, err := r.Engine.Command(&cs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Engine.Name(), err)
	}
	s.Argv, s.Env, s.Dir = argv, append(r.engineEnv(), env...), ""
	res, err := executor.Host{}.Run(ctx, s)
	if res != nil && (res.TimedOut || ctx.Err() != nil) {
		r.remove(cs.Name)
	}
	return res, err
}

func (r *Runtime) engineEnv() []string {
	if r.EngineEnv != nil {
		return append([]string(nil), r.EngineEnv...)
	}
	return os.Environ()
}

func (r *Runtime) remove(name string) {
	if r.Remove == nil || name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = r.Remove(ctx, name)
}

// acquire returns the slot's running container, starting it if needed.
func (r *Runtime) acquire(ctx context.Context) (*slotContainer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil, errors.New("slot container runtime is closed")
	}
	if r.slot != nil && r.slot.alive() {
		r.runs[r.slot]++
		return r.slot, nil
	}
	if r.slot != nil {
		r.slot.stop(r.remove)
		r.slot = nil
	}
	c, err := r.start(ctx)
	if err != nil {
		return nil, err
	}
	r.slot = c
	if r.runs == nil {
		r.runs = map[*slotContainer]int{}
	}
	r.runs[c]++
	return c, nil
}

// release ends a Run on c; broken says the agent did not answer, so the
// container is replaced on the next Run.
func (r *Runtime) release(c *slotContainer, broken bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs[c]--
	if broken && r.slot == c {
		r.slot = nil
	}
	if r.runs[c] == 0 && r.slot != c {
		delete(r.runs, c)
		go c.stop(r.remove)
	}
}

// Close stops the slot's container (PerSlot). It is safe to call more
// than once; Runs after Close fail.
func (r *Runtime) Close() error {
	r.mu.Lock()
	c := r.slot
	r.slot, r.done = nil, true
	busy := c != nil && r.runs[c] > 0
	r.mu.Unlock()
	if c != nil && !busy {
		c.stop(r.remove)
	}
	return nil
}

// slotContainer is a running slot container and its agent.
type slotContainer struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	start time.Time
	ready time.Time

	exited chan struct{} // closed when the engine process has exited
	err    error         // its Wait error, once exited
	stderr *tail         // the engine's last words, for error messages
}

func (c *slotContainer) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// exitReason says why the engine exited ("" while it runs).
func (c *slotContainer) exitReason() string {
	if c.alive() {
		return ""
	}
	why := "exited"
	if c.err != nil {
		why = c.err.Error()
	}
	if tail := strings.TrimSpace(c.stderr.String()); tail != "" {
		why += ": " + tail
	}
	return why
}

// start starts the slot container and waits for its agent's ready line.
func (r *Runtime) start(ctx context.Context) (*slotContainer, error) {
	cs := r.Base
	cs.Name, cs.Stdin, cs.Dir = r.ContainerName, true, "/"
	cs.Argv = []string{AgentBinaryTarget, "slot-agent", "--socket", r.AgentSocketTarget}
	cs.Env = nil
	argv, env, err := r.Engine.Command(&cs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Engine.Name(), err)
	}
	if r.Remove != nil && r.ContainerName != "" {
		r.remove(r.ContainerName) // a container of a previous pilot with this name
	}
	_ = os.Remove(r.AgentSocket)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(r.engineEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c := &slotContainer{name: r.ContainerName, cmd: cmd, exited: make(chan struct{}), stderr: &tail{max: 4096}}
	cmd.Stderr = c.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	c.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	ready := make(chan error, 1)
	go func() {
		br := bufio.NewReader(stdout)
		ready <- agent.ReadReady(br)
		_, _ = io.Copy(io.Discard, br) // the agent logs nothing on stdout after its ready line
	}()
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	timeout := r.StartTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	fail := func(err error) (*slotContainer, error) {
		c.stop(r.remove)
		return nil, err
	}
	select {
	case err := <-ready:
		if err != nil {
			<-c.exited // the engine failed: wait for its last words
			return fail(fmt.Errorf("start slot container (%s %s): %w%s", r.Engine.Name(), r.Base.Image, err, c.tail()))
		}
	case <-c.exited:
		return fail(fmt.Errorf("start slot container (%s %s): the engine exited before the agent was ready: %s", r.Engine.Name(), r.Base.Image, c.exitReason()))
	case <-timer.C:
		return fail(fmt.Errorf("start slot container (%s %s): no ready line from the agent within %s%s", r.Engine.Name(), r.Base.Image, timeout, c.tail()))
	case <-ctx.Done():
		return fail(fmt.Errorf("start slot container: %w", ctx.Err()))
	}
	c.ready = time.Now()
	return c, nil
}

func (c *slotContainer) tail() string {
	if t := strings.TrimSpace(c.stderr.String()); t != "" {
		return ": " + t
	}
	return ""
}

// stop closes the agent's stdin (it exits and the engine removes the
// container), waits up to 10 s, then kills the engine's process group and
// force-removes the container.
func (c *slotContainer) stop(remove func(string)) {
	_ = c.stdin.Close()
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
		return
	case <-t.C:
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.exited
	remove(c.name)
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
